package ns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// SysV IPC objects of a dumped IPC namespace: shared memory segments,
// message queues and semaphore sets, read from a crtools thread inside the
// namespace (inNamespace: the *ctl calls and /proc/sys/kernel/*_next_id
// act on the caller's IPC namespace) and recreated there at restore with
// the same ids, keys, modes, owners and creators, before any task is
// cloned into it.
//
// Images, as CRIU 4's (ipc_ns.c; interface facts only):
//   - ipcns-shm-ID.img: one ipc_shm_entry per segment, in_pagemaps set:
//     the contents are in pagemap-shmem-<shmid>.img and its pages file,
//     offsets in the segment as addresses (the caller, engine/dump, writes
//     them from the file SysVShm hands it). Without in_pagemaps (older
//     images) the contents follow the entry, the size rounded up to 4.
//   - ipcns-msg-ID.img: one ipc_msg_entry per queue, each followed by its
//     qnum messages: an ipc_msg entry (type, size), then the text padded
//     with zeros to a multiple of 8 bytes.
//   - ipcns-sem-ID.img: one ipc_sem_entry per set, followed by its nsems
//     values as little-endian u16, padded with zeros to a multiple of 8.
//
// Ids come back by writing kernel/{shm,msg,sem}_next_id before each
// create, which then takes that id (index and sequence) or fails. A
// creator (cuid, cgid) other than crtools' is taken by the creating
// thread for the create alone (its effective ids; the thread becomes
// root again after). The times (ctime, otime, ...), the last pids, and
// the semaphores' SEM_UNDO adjustments of the tasks are not restored:
// the kernel offers no way to read a task's adjustments (kcmp with
// KCMP_SYSVSEM only tells whether a task has an undo list, and every
// task that cloned a thread with CLONE_SYSVSEM, as pthread_create does,
// has one, empty or not), nor to set the others.
//
// A segment removed (IPC_RMID) while still attached lives on, with the
// private key and SHM_DEST in its mode, until its last detach: restore
// creates it (private key, same id), lets the tasks attach it, and
// removes it again once they have (RemoveSysV). Its attachments' names in
// /proc/PID/maps then show the private key ("/SYSV00000000"), where they
// showed the key it had when created: the images do not keep that key.
//
// With kernel/shm_rmid_forced set, the kernel destroys a segment at its
// last detach, and an unattached one with its creator: the dump reads the
// segments with it off for a moment (collectSysV), the restore creates
// them with it off and sets it after (ApplyIPC), and an unattached
// segment, whose creator is then crtools, goes when crtools exits.
//
// Refused at dump: segments on huge pages (SHM_HUGETLB).

// sysvDump is what a dump read of the SysV objects of a namespace.
type sysvDump struct {
	shm []shmSeg
	// shmData are the contents of shm's segments in images without
	// in_pagemaps (restore only), nil for the others.
	shmData [][]byte
	msg     []msgQueue
	sem     []semSet
}

type shmSeg struct {
	e *pb.IpcShmEntry
	// file is the segment's shmem file (restore reads the contents from
	// the images instead).
	file *os.File
}

type msgQueue struct {
	e    *pb.IpcMsgEntry
	msgs []ipcMessage
}

type ipcMessage struct {
	mtype int64
	text  []byte
}

type semSet struct {
	e    *pb.IpcSemEntry
	vals []uint16
}

func ipcDesc(id int, p *unix.SysvIpcPerm) *pb.IpcDescEntry {
	return &pb.IpcDescEntry{Key: proto.Uint32(uint32(p.Key)), Uid: proto.Uint32(p.Uid), Gid: proto.Uint32(p.Gid),
		Cuid: proto.Uint32(p.Cuid), Cgid: proto.Uint32(p.Cgid), Mode: proto.Uint32(p.Mode), Id: proto.Uint32(uint32(id))}
}

// hugetlbfsMagic is HUGETLBFS_MAGIC (statfs f_type).
const hugetlbfsMagic = 0x958458f6

// collectSysV reads every SysV object of the calling thread's IPC
// namespace. On an error it closes the segment files it opened.
// Preconditions: the calling thread is in the namespace (inNamespace).
func collectSysV() (_ *sysvDump, err error) {
	d := &sysvDump{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	// shmFile attaches each segment for a moment: with
	// kernel/shm_rmid_forced at 1, its detach would destroy an
	// unattached segment, which the tree must keep (-R, a failed dump).
	// Off meanwhile: setting it back destroys only orphans (creator
	// gone) that nothing attaches, and such a segment cannot exist while
	// it is on.
	forced, err := readUint("kernel/shm_rmid_forced")
	if err != nil {
		return nil, err
	}
	if forced != 0 {
		const name = "/proc/sys/kernel/shm_rmid_forced"
		if err := os.WriteFile(name, []byte("0"), 0); err != nil {
			return nil, fmt.Errorf("set sysctl kernel/shm_rmid_forced to 0 while the segments are read: %w", err)
		}
		defer func() {
			if werr := os.WriteFile(name, []byte(strconv.FormatUint(forced, 10)), 0); werr != nil && err == nil {
				err = fmt.Errorf("set sysctl kernel/shm_rmid_forced back to %d: %w", forced, werr)
			}
		}()
	}
	var sds unix.SysvShmDesc
	maxIdx, err := unix.SysvShmCtl(0, shmInfo, &sds)
	if err != nil {
		return nil, fmt.Errorf("list SysV shared memory segments (SHM_INFO): %w", err)
	}
	for i := 0; i <= maxIdx; i++ {
		id, err := unix.SysvShmCtl(i, shmStat, &sds)
		if errors.Is(err, unix.EINVAL) {
			continue // a free slot
		}
		if err != nil {
			return nil, fmt.Errorf("read SysV shared memory segment #%d (SHM_STAT): %w", i, err)
		}
		f, err := shmFile(id, sds.Segsz)
		if err != nil {
			return nil, err
		}
		d.shm = append(d.shm, shmSeg{e: &pb.IpcShmEntry{Desc: ipcDesc(id, &sds.Perm), Size: proto.Uint64(sds.Segsz), InPagemaps: proto.Bool(true)}, file: f})
	}
	// msgrcv copies no more than kernel/msgmax bytes of a message, which
	// may have been lowered after larger ones were sent: raised to a
	// queue's bytes while its messages are read, set back after.
	msgmax, err := readUint("kernel/msgmax")
	if err != nil {
		return nil, err
	}
	raised := msgmax
	defer func() {
		if raised == msgmax {
			return
		}
		if werr := os.WriteFile("/proc/sys/kernel/msgmax", []byte(strconv.FormatUint(msgmax, 10)), 0); werr != nil && err == nil {
			err = fmt.Errorf("set sysctl kernel/msgmax back to %d: %w", msgmax, werr)
		}
	}()
	var mds msqidDS
	if maxIdx, err = msgctl(0, msgInfo, &mds); err != nil {
		return nil, fmt.Errorf("list SysV message queues (MSG_INFO): %w", err)
	}
	for i := 0; i <= maxIdx; i++ {
		id, err := msgctl(i, msgStat, &mds)
		if errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read SysV message queue #%d (MSG_STAT): %w", i, err)
		}
		q := msgQueue{e: &pb.IpcMsgEntry{Desc: ipcDesc(id, &mds.Perm), Qbytes: proto.Uint32(uint32(mds.Qbytes)), Qnum: proto.Uint32(uint32(mds.Qnum))}}
		// No message holds more than the queue's bytes.
		if mds.Cbytes > raised {
			if err := os.WriteFile("/proc/sys/kernel/msgmax", []byte(strconv.FormatUint(mds.Cbytes, 10)), 0); err != nil {
				return nil, fmt.Errorf("raise sysctl kernel/msgmax to %d to read SysV message queue %d: %w", mds.Cbytes, id, err)
			}
			raised = mds.Cbytes
		}
		buf := make([]byte, 8+max(mds.Cbytes, 1))
		for j := 0; j < int(mds.Qnum); j++ {
			n, err := msgrcvCopy(id, buf, j)
			if err != nil {
				return nil, fmt.Errorf("copy message %d of SysV message queue %d (msgrcv MSG_COPY): %w", j, id, err)
			}
			q.msgs = append(q.msgs, ipcMessage{mtype: int64(binary.LittleEndian.Uint64(buf)), text: append([]byte(nil), buf[8:8+n]...)})
		}
		d.msg = append(d.msg, q)
	}
	if maxIdx, err = semMaxIdx(); err != nil {
		return nil, fmt.Errorf("list SysV semaphore sets (SEM_INFO): %w", err)
	}
	for i := 0; i <= maxIdx; i++ {
		var ds semidDS
		id, err := semStatAt(i, &ds)
		if errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read SysV semaphore set #%d (SEM_STAT): %w", i, err)
		}
		s := semSet{e: &pb.IpcSemEntry{Desc: ipcDesc(id, &ds.Perm), Nsems: proto.Uint32(uint32(ds.Nsems))}, vals: make([]uint16, ds.Nsems)}
		if ds.Nsems > 0 {
			if err := semGetAll(id, s.vals); err != nil {
				return nil, fmt.Errorf("read the values of SysV semaphore set %d (GETALL): %w", id, err)
			}
		}
		d.sem = append(d.sem, s)
	}
	return d, nil
}

// shmFile opens the shmem file of segment id (size bytes): attached
// read-only by crtools for a moment, through the map_files link of that
// attachment. The file keeps the contents readable after the tree and
// the namespace are gone.
func shmFile(id int, size uint64) (*os.File, error) {
	mem, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("attach SysV shared memory segment %d to read it: %w", id, err)
	}
	start := sliceAddr(mem)
	end := start + (size+pageSize-1)&^(pageSize-1)
	f, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, end))
	if derr := unix.SysvShmDetach(mem); derr != nil && err == nil {
		f.Close()
		return nil, fmt.Errorf("detach SysV shared memory segment %d: %w", id, derr)
	}
	if err != nil {
		return nil, fmt.Errorf("open SysV shared memory segment %d: %w", id, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat SysV shared memory segment %d: %w", id, err)
	}
	if st.Type == hugetlbfsMagic {
		f.Close()
		return nil, fmt.Errorf("the ipc namespace holds SysV shared memory segment %d on huge pages (SHM_HUGETLB): %w", id, engine.ErrNotSupported)
	}
	return f, nil
}

const pageSize = 4096

func (d *sysvDump) close() {
	if d == nil {
		return
	}
	for _, s := range d.shm {
		if s.file != nil {
			s.file.Close()
		}
	}
}

// SysVShm is a SysV shared memory segment of a dumped IPC namespace,
// whose contents the caller saves in pagemap-shmem-<ID>.img (offsets in
// the segment as addresses), read from File, which it then closes.
type SysVShm struct {
	ID   uint32
	Key  uint32
	Size uint64
	File *os.File
	// Removed: removed with IPC_RMID, and still attached (its key is
	// the private one now).
	Removed bool
}

// SysVShm returns the SysV segments of the dumped IPC namespace (none
// without -n ipc).
func (d *Dump) SysVShm() []SysVShm {
	if d == nil || d.sysv == nil {
		return nil
	}
	var out []SysVShm
	for _, s := range d.sysv.shm {
		out = append(out, SysVShm{ID: s.e.GetDesc().GetId(), Key: s.e.GetDesc().GetKey(), Size: s.e.GetSize(), File: s.file,
			Removed: s.e.GetDesc().GetMode()&shmDest != 0})
	}
	return out
}

// writeSysV writes the three SysV images of namespace id.
func (d *sysvDump) write(dir string, id uint32) error {
	var shm []proto.Message
	for _, s := range d.shm {
		shm = append(shm, s.e)
	}
	if err := image.WriteFile(dir, image.IPCShm, uint64(id), shm...); err != nil {
		return fmt.Errorf("write SysV shared memory segments: %w", err)
	}
	w, err := image.Create(dir, image.IPCMsg, uint64(id))
	if err != nil {
		return fmt.Errorf("write SysV message queues: %w", err)
	}
	for _, q := range d.msg {
		if err := w.Write(q.e); err != nil {
			w.Close()
			return fmt.Errorf("write SysV message queue %d: %w", q.e.GetDesc().GetId(), err)
		}
		for _, m := range q.msgs {
			if err := w.Write(&pb.IpcMsg{Mtype: proto.Uint64(uint64(m.mtype)), Msize: proto.Uint32(uint32(len(m.text)))}); err != nil {
				w.Close()
				return fmt.Errorf("write SysV message queue %d: %w", q.e.GetDesc().GetId(), err)
			}
			if err := w.WriteExtra(pad8(m.text)); err != nil {
				w.Close()
				return fmt.Errorf("write SysV message queue %d: %w", q.e.GetDesc().GetId(), err)
			}
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write SysV message queues: %w", err)
	}
	if w, err = image.Create(dir, image.IPCSem, uint64(id)); err != nil {
		return fmt.Errorf("write SysV semaphore sets: %w", err)
	}
	for _, s := range d.sem {
		b := make([]byte, 2*len(s.vals))
		for i, v := range s.vals {
			binary.LittleEndian.PutUint16(b[2*i:], v)
		}
		if err := w.Write(s.e); err != nil {
			w.Close()
			return fmt.Errorf("write SysV semaphore set %d: %w", s.e.GetDesc().GetId(), err)
		}
		if err := w.WriteExtra(pad8(b)); err != nil {
			w.Close()
			return fmt.Errorf("write SysV semaphore set %d: %w", s.e.GetDesc().GetId(), err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write SysV semaphore sets: %w", err)
	}
	return nil
}

// pad8 is b with zeros up to a multiple of 8 bytes.
func pad8(b []byte) []byte {
	if r := len(b) % 8; r != 0 {
		b = append(b[:len(b):len(b)], make([]byte, 8-r)...)
	}
	return b
}

// loadSysV reads the SysV images of namespace id from dir (absent files:
// no objects of that kind).
func loadSysV(dir string, id uint32) (*sysvDump, error) {
	d := &sysvDump{}
	for _, k := range []*image.Kind{image.IPCShm, image.IPCMsg, image.IPCSem} {
		if !image.Exists(dir, k, uint64(id)) {
			continue
		}
		r, err := image.Open(dir, k, uint64(id))
		if err != nil {
			return nil, err
		}
		es, err := r.ReadAll()
		r.Close()
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			switch m := e.Msg.(type) {
			case *pb.IpcShmEntry:
				d.shm = append(d.shm, shmSeg{e: m})
				d.shmData = append(d.shmData, e.Payload)
			case *pb.IpcMsgEntry:
				q := msgQueue{e: m}
				for _, x := range e.Messages {
					q.msgs = append(q.msgs, ipcMessage{mtype: int64(x.Msg.GetMtype()), text: x.Text})
				}
				d.msg = append(d.msg, q)
			case *pb.IpcSemEntry:
				vals, err := image.SemValues(m, e.Payload)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", r.Name(), err)
				}
				d.sem = append(d.sem, semSet{e: m, vals: vals})
			}
		}
	}
	return d, nil
}

// SysVShmSize returns the size of SysV segment id of the restored IPC
// namespace, ok false if the images have no such segment.
func (r *Root) SysVShmSize(id uint64) (uint64, bool) {
	if r == nil || r.sysv == nil {
		return 0, false
	}
	for _, s := range r.sysv.shm {
		if uint64(s.e.GetDesc().GetId()) == id {
			return s.e.GetSize(), true
		}
	}
	return 0, false
}

// errPoisoned marks an error after which the calling thread's
// credentials could not be put back: inNamespace keeps it locked, so that
// it dies with its goroutine.
type errPoisoned struct{ error }

func (e errPoisoned) Unwrap() error { return e.error }

// asCreator runs create with the calling thread's effective ids set to
// cuid and cgid (the creator the object records), then back to root.
func asCreator(cuid, cgid uint32, create func() (int, error)) (int, error) {
	euid, egid := uint32(unix.Geteuid()), uint32(unix.Getegid())
	if cuid == euid && cgid == egid {
		return create()
	}
	if err := setEGID(cgid); err != nil {
		return 0, fmt.Errorf("take creator gid %d: %w", cgid, err)
	}
	if err := setEUID(cuid); err != nil {
		if e := setEGID(egid); e != nil {
			return 0, errPoisoned{fmt.Errorf("take creator uid %d: %w; and put back gid %d: %v", cuid, err, egid, e)}
		}
		return 0, fmt.Errorf("take creator uid %d: %w", cuid, err)
	}
	id, err := create()
	if e := setEUID(euid); e != nil {
		return 0, errPoisoned{fmt.Errorf("put back uid %d after creating as %d: %v", euid, cuid, e)}
	}
	if e := setEGID(egid); e != nil {
		return 0, errPoisoned{fmt.Errorf("put back gid %d after creating as %d: %v", egid, cgid, e)}
	}
	return id, err
}

// createAt creates an object with id want: kernel/<kind>_next_id first,
// then create as the object's creator.
func createAt(kind string, desc *pb.IpcDescEntry, create func() (int, error)) error {
	want := int(desc.GetId())
	if err := os.WriteFile("/proc/sys/kernel/"+kind+"_next_id", []byte(strconv.Itoa(want)), 0); err != nil {
		return fmt.Errorf("set kernel/%s_next_id to %d: %w", kind, want, err)
	}
	id, err := asCreator(desc.GetCuid(), desc.GetCgid(), create)
	if err != nil {
		return err
	}
	if id != want {
		return fmt.Errorf("created id %d, want %d", id, want)
	}
	return nil
}

// empty tells whether d holds no object (nil: no SysV images).
func (d *sysvDump) empty() bool {
	return d == nil || len(d.shm)+len(d.msg)+len(d.sem) == 0
}

// room are the sysctls to write instead of v's while d's objects are
// created: shm_rmid_forced off, and the limits on SysV objects raised to
// let them be: shmmax, shmall, shmmni, msgmni and kernel/sem's SEMMSL,
// SEMMNS and SEMMNI (msgmax and msgmnb: restoreMsg).
func (d *sysvDump) room(v *pb.IpcVarEntry) map[string]string {
	u := func(x uint64) string { return strconv.FormatUint(x, 10) }
	var maxSize, pages uint64
	for _, s := range d.shm {
		maxSize = max(maxSize, s.e.GetSize())
		pages += (s.e.GetSize() + pageSize - 1) / pageSize
	}
	out := map[string]string{
		"kernel/shm_rmid_forced": "0",
		"kernel/shmmax":          u(max(v.GetShmCtlmax(), maxSize)),
		"kernel/shmall":          u(max(v.GetShmCtlall(), pages)),
		"kernel/shmmni":          u(max(uint64(v.GetShmCtlmni()), uint64(len(d.shm)))),
		"kernel/msgmni":          u(max(uint64(v.GetMsgCtlmni()), uint64(len(d.msg)))),
	}
	if sem := v.GetSemCtls(); len(sem) == 4 { // SEMMSL, SEMMNS, SEMOPM, SEMMNI
		var most, total uint64
		for _, s := range d.sem {
			most, total = max(most, uint64(s.e.GetNsems())), total+uint64(s.e.GetNsems())
		}
		out["kernel/sem"] = strings.Join([]string{u(max(uint64(sem[0]), most)), u(max(uint64(sem[1]), total)),
			u(uint64(sem[2])), u(max(uint64(sem[3]), uint64(len(d.sem))))}, " ")
	}
	return out
}

// setPerm sets the owner and permissions of an object's perm as desc has
// them.
func setPerm(p *unix.SysvIpcPerm, desc *pb.IpcDescEntry) {
	p.Uid, p.Gid, p.Mode = desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777
}

// restoreSysV creates the SysV objects of d in the calling thread's IPC
// namespace; pages of segments are read from dir. v are the namespace's
// sysctls (msgmax and msgmnb are raised for a while if a queue needs
// more, and set back after).
// Preconditions: the calling thread is in the new namespace, which holds
// no object yet.
func (d *sysvDump) restore(dir string, v *pb.IpcVarEntry) error {
	for i, s := range d.shm {
		desc := s.e.GetDesc()
		err := createAt("shm", desc, func() (int, error) {
			return unix.SysvShmGet(int(int32(desc.GetKey())), int(s.e.GetSize()), int(desc.GetMode()&0o777)|ipcCreat|ipcExcl)
		})
		if err == nil {
			err = d.fillShm(dir, i)
		}
		if err != nil {
			return fmt.Errorf("restore SysV shared memory segment %d (key %#x): %w", desc.GetId(), desc.GetKey(), err)
		}
	}
	if len(d.msg) > 0 {
		if err := d.restoreMsg(v); err != nil {
			return err
		}
	}
	for _, s := range d.sem {
		desc := s.e.GetDesc()
		err := createAt("sem", desc, func() (int, error) {
			return semget(int32(desc.GetKey()), int(s.e.GetNsems()), int(desc.GetMode()&0o777)|ipcCreat|ipcExcl)
		})
		if err == nil {
			var ds semidDS
			if err = semGet(int(desc.GetId()), &ds); err == nil {
				setPerm(&ds.Perm, desc)
				err = semSetPerm(int(desc.GetId()), &ds)
			}
		}
		if err == nil && len(s.vals) > 0 {
			err = semSetAll(int(desc.GetId()), s.vals)
		}
		if err != nil {
			return fmt.Errorf("restore SysV semaphore set %d (key %#x): %w", desc.GetId(), desc.GetKey(), err)
		}
	}
	return nil
}

// fillShm sets the owner, permissions, lock and contents of segment i.
func (d *sysvDump) fillShm(dir string, i int) error {
	s := d.shm[i]
	desc := s.e.GetDesc()
	id := int(desc.GetId())
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, ipcStat, &ds); err != nil {
		return err
	}
	setPerm(&ds.Perm, desc)
	if _, err := unix.SysvShmCtl(id, ipcSet, &ds); err != nil {
		return fmt.Errorf("set owner %d:%d and mode %o: %w", desc.GetUid(), desc.GetGid(), desc.GetMode()&0o777, err)
	}
	if desc.GetMode()&shmLocked != 0 {
		if _, err := unix.SysvShmCtl(id, shmLock, nil); err != nil {
			return fmt.Errorf("lock (SHM_LOCK): %w", err)
		}
	}
	var data []byte
	var pages *image.PagesReader
	if s.e.GetInPagemaps() {
		if !image.Exists(dir, image.ShmemPagemap, uint64(id)) {
			return nil // never written: all zeros
		}
		var err error
		if pages, err = image.OpenPages(dir, image.ShmemPagemap, uint64(id)); err != nil {
			return err
		}
		defer pages.Close()
	} else if data = d.shmData[i]; len(data) == 0 {
		return nil
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fmt.Errorf("attach to fill: %w", err)
	}
	defer unix.SysvShmDetach(mem)
	if pages == nil {
		copy(mem, data)
		return nil
	}
	for k, run := range pages.Index.Runs {
		if run.End() > uint64(len(mem)) {
			return fmt.Errorf("%s: pages %#x+%d lie past the segment's %d bytes", pages.Index.File, run.Vaddr, run.NrPages, len(mem))
		}
		b, err := pages.ReadRun(k)
		if err != nil {
			return err
		}
		copy(mem[run.Vaddr:], b)
	}
	return nil
}

// restoreMsg creates the message queues and sends their messages again,
// in order. A queue takes its size (qbytes) from kernel/msgmnb when it is
// created, and setting a larger one later needs CAP_SYS_RESOURCE: msgmnb
// is set to each queue's size before its create. A message larger than
// kernel/msgmax cannot be sent: msgmax is raised to the largest one. Both
// are set back to the image's values at the end.
func (d *sysvDump) restoreMsg(v *pb.IpcVarEntry) error {
	maxMsg := uint64(v.GetMsgCtlmax())
	for _, q := range d.msg {
		for _, m := range q.msgs {
			maxMsg = max(maxMsg, uint64(len(m.text)))
		}
	}
	setSysctl := func(name string, val uint64) error {
		if err := os.WriteFile("/proc/sys/kernel/"+name, []byte(strconv.FormatUint(val, 10)), 0); err != nil {
			return fmt.Errorf("set sysctl kernel/%s to %d: %w", name, val, err)
		}
		return nil
	}
	if maxMsg != uint64(v.GetMsgCtlmax()) {
		if err := setSysctl("msgmax", maxMsg); err != nil {
			return err
		}
	}
	for _, q := range d.msg {
		desc := q.e.GetDesc()
		err := setSysctl("msgmnb", uint64(q.e.GetQbytes()))
		if err == nil {
			err = createAt("msg", desc, func() (int, error) {
				return msgget(int32(desc.GetKey()), int(desc.GetMode()&0o777)|ipcCreat|ipcExcl)
			})
		}
		if err == nil {
			var ds msqidDS
			if _, err = msgctl(int(desc.GetId()), ipcStat, &ds); err == nil {
				setPerm(&ds.Perm, desc)
				_, err = msgctl(int(desc.GetId()), ipcSet, &ds)
			}
		}
		for k, m := range q.msgs {
			if err != nil {
				break
			}
			buf := make([]byte, 8+len(m.text))
			binary.LittleEndian.PutUint64(buf, uint64(m.mtype))
			copy(buf[8:], m.text)
			if err = msgsnd(int(desc.GetId()), buf); err != nil {
				err = fmt.Errorf("send message %d of %d (type %d, %d bytes): %w", k, len(q.msgs), m.mtype, len(m.text), err)
			}
		}
		if err != nil {
			return fmt.Errorf("restore SysV message queue %d (key %#x): %w", desc.GetId(), desc.GetKey(), err)
		}
	}
	if err := setSysctl("msgmnb", uint64(v.GetMsgCtlmnb())); err != nil {
		return err
	}
	return setSysctl("msgmax", uint64(v.GetMsgCtlmax()))
}

// RemoveSysV removes (IPC_RMID) the restored segments that had been
// removed while attached, now that the tasks have attached them again.
// pid is the restored root, in the new IPC namespace.
func (r *Root) RemoveSysV(pid int) error {
	if r == nil || r.sysv == nil {
		return nil
	}
	var ids []int
	for _, s := range r.sysv.shm {
		if s.e.GetDesc().GetMode()&shmDest != 0 {
			ids = append(ids, int(s.e.GetDesc().GetId()))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return inNamespace(pid, "ipc", func() error {
		for _, id := range ids {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
				return fmt.Errorf("remove SysV shared memory segment %d again (IPC_RMID): %w", id, err)
			}
		}
		return nil
	})
}
