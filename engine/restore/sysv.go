package restore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// SysV shared memory attachments (VMA_AREA_SYSVIPC VMAs; the dump side is
// engine/dump/sysv.go). A task attaches the segment again by an injected
// shmat of vma_entry.shmid at the dumped address, with the other mmaps:
// every task that had it attaches the same segment, so they share its
// pages as before. The images hold whole attachments (dump refuses
// others): a VMA with pgoff 0 starts one, and the VMAs after it with the
// same shmid and the offsets that follow are its other parts, split by
// mprotect. shmat maps them all, readable, and writable unless no part
// was (SHM_RDONLY: a read-only attachment cannot be made writable, so a
// part of a writable one must not be attached read-only); each part then
// gets its own protection from protectVMAs (PROT_EXEC too: an attachment
// may always be made executable).
//
// The segment itself comes from outside the images when the tree shared
// crtools' IPC namespace (checkSysVSegments looks for it before any task
// is created), or from the images with the namespace (engine/ns/sysv.go),
// created before the tasks.

// shmRdonly is SHM_RDONLY for shmat.
const shmRdonly = 0o10000

// sysvAttachment is an attachment of the image: its VMAs from its head
// (pgoff 0) on, and whether one of them is writable.
type sysvAttachment struct {
	shmid      uint64
	start, end uint64
	writable   bool
}

// sysvAttachments groups the SysV VMAs of vmas (sorted) into attachments,
// by the address of their heads.
func sysvAttachments(vmas []*pb.VmaEntry) (map[uint64]*sysvAttachment, error) {
	var atts map[uint64]*sysvAttachment
	var last *sysvAttachment
	for _, v := range vmas {
		if v.GetStatus()&vmaAreaSysvipc == 0 {
			continue
		}
		if last != nil && last.shmid == v.GetShmid() && last.end == v.GetStart() && v.GetPgoff() == last.end-last.start {
			last.end = v.GetEnd()
			last.writable = last.writable || v.GetProt()&unix.PROT_WRITE != 0
			continue
		}
		if v.GetPgoff() != 0 {
			return nil, fmt.Errorf("VMA %#x-%#x maps SysV shared memory segment %d from offset %#x with no VMA of the same attachment before it: "+
				"restore attaches whole segments only", v.GetStart(), v.GetEnd(), v.GetShmid(), v.GetPgoff())
		}
		if atts == nil {
			atts = map[uint64]*sysvAttachment{}
		}
		last = &sysvAttachment{shmid: v.GetShmid(), start: v.GetStart(), end: v.GetEnd(), writable: v.GetProt()&unix.PROT_WRITE != 0}
		atts[v.GetStart()] = last
	}
	return atts, nil
}

// attachSysV queues the shmat of the attachment that VMA v starts (if it
// starts one) and returns v's plan.
func (p *puppet) attachSysV(atts map[uint64]*sysvAttachment, v *pb.VmaEntry) (vmaPlan, error) {
	prot := uint64(v.GetProt())
	att := atts[v.GetStart()]
	if att == nil { // a later part of an attachment: mapped by its head
		for _, a := range atts {
			if a.shmid == v.GetShmid() && a.start < v.GetStart() && v.GetEnd() <= a.end {
				att = a
				break
			}
		}
		if att == nil {
			return vmaPlan{}, fmt.Errorf("restore VMA %#x-%#x of task %d: no attachment of SysV segment %d holds it", v.GetStart(), v.GetEnd(), p.pid, v.GetShmid())
		}
	} else {
		flags := uint64(0)
		if !att.writable {
			flags = shmRdonly
		}
		start, shmid := att.start, att.shmid
		what := fmt.Sprintf("attach SysV shared memory segment %d at %#x (shmat)", shmid, start)
		c := pendingCall{what: what, nr: unix.SYS_SHMAT, after: func(ret uint64, err error) error {
			if err != nil {
				hint := ""
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
					hint = " (the segment is gone, or the address is taken)"
				}
				return fmt.Errorf("%s in task %d: %w%s", what, p.pid, err, hint)
			}
			if ret != start {
				return fmt.Errorf("%s in task %d: attached at %#x", what, p.pid, ret)
			}
			return nil
		}}
		if err := p.queue(c, []uint64{shmid, start, flags}); err != nil {
			return vmaPlan{}, err
		}
	}
	mapProt := uint64(unix.PROT_READ)
	if att.writable {
		mapProt |= unix.PROT_WRITE
	}
	return vmaPlan{e: v, mapProt: mapProt, needProt: mapProt != prot}, nil
}

// checkSysVSegments makes sure, before any task is created, that every
// SysV segment the images attach exists with a size that fits the
// attachment: in the images of the tree's IPC namespace, or else in
// crtools' IPC namespace (the tree shared it: the images hold no copy).
func (r *restorer) checkSysVSegments(img *imageSet) error {
	own := r.ns != nil && r.ns.IPC != nil
	for _, t := range img.tasks {
		if t.mm == nil {
			continue
		}
		atts, err := sysvAttachments(t.mm.GetVmas())
		if err != nil {
			return fmt.Errorf("restore task %d: %w", t.pid, err)
		}
		for _, a := range atts {
			if own {
				size, ok := r.ns.SysVShmSize(a.shmid)
				if !ok {
					return fmt.Errorf("restore task %d: the images of its ipc namespace hold no SysV shared memory segment %d, which the task attached at %#x", t.pid, a.shmid, a.start)
				}
				if size = (size + pageSize - 1) &^ (pageSize - 1); size != a.end-a.start {
					return fmt.Errorf("restore task %d: SysV shared memory segment %d of the images has %d bytes, the task attached %d at %#x", t.pid, a.shmid, size, a.end-a.start, a.start)
				}
				continue
			}
			var ds unix.SysvShmDesc
			if _, err := unix.SysvShmCtl(int(a.shmid), unix.IPC_STAT, &ds); err != nil {
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
					return fmt.Errorf("restore task %d: SysV shared memory segment %d, attached at %#x when dumped, does not exist in crtools' IPC namespace; "+
						"the images hold no copy of it (the tree shared the namespace, the segment lived outside the tree)", t.pid, a.shmid, a.start)
				}
				return fmt.Errorf("restore task %d: read SysV shared memory segment %d: %w", t.pid, a.shmid, err)
			}
			if size := (ds.Segsz + pageSize - 1) &^ (pageSize - 1); size != a.end-a.start {
				return fmt.Errorf("restore task %d: SysV shared memory segment %d has %d bytes now, the task attached %d bytes of it at %#x when dumped",
					t.pid, a.shmid, ds.Segsz, a.end-a.start, a.start)
			}
		}
	}
	return nil
}
