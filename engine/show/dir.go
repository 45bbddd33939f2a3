package show

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// Dir summarises the image set in dir: the process tree, each task's
// memory, and each task's open files. A missing or damaged image is an
// error naming it.
func Dir(w io.Writer, dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("read images directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("read images directory %s: not a directory", dir)
	}
	s, err := loadSet(dir)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	s.tree(bw)
	s.memory(bw)
	s.seccompModes(bw)
	s.openFiles(bw)
	s.sysv(bw) // sysv.go
	return bw.Flush()
}

type task struct {
	ps      *pb.PstreeEntry
	core    *pb.CoreEntry
	threads map[uint32]*pb.CoreEntry
	ids     *pb.TaskKobjIdsEntry
	mm      *pb.MmEntry
	pages   *image.PageIndex
	fs      *pb.FsEntry
	fds     []*pb.FdinfoEntry
}

type imageSet struct {
	dir    string
	tasks  []*task
	files  map[uint32]*pb.FileEntry
	pipes  map[uint32][]byte              // pipe_id -> queued data
	memfds map[uint64]*pb.MemfdInodeEntry // inode_id -> memfd (memfd.img)
	// seccomp are the filters of seccomp.img (none without it).
	seccomp []*pb.SeccompFilter
	// sysvSets are the SysV objects of dumped IPC namespaces (sysv.go).
	sysvSets []*sysvSet
}

func loadSet(dir string) (*imageSet, error) {
	s := &imageSet{dir: dir, files: map[uint32]*pb.FileEntry{}, pipes: map[uint32][]byte{},
		memfds: map[uint64]*pb.MemfdInodeEntry{}}
	inv := &pb.InventoryEntry{}
	if err := image.ReadOne(dir, image.Inventory, 0, inv); err != nil {
		return nil, err
	}
	ps, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("%s: no tasks", image.Pstree.Path(dir, 0))
	}
	for _, e := range ps {
		t := &task{ps: e.Msg.(*pb.PstreeEntry), threads: map[uint32]*pb.CoreEntry{}}
		pid := uint64(t.ps.GetPid())
		t.core = &pb.CoreEntry{}
		if err := image.ReadOne(dir, image.Core, pid, t.core); err != nil {
			return nil, err
		}
		for _, tid := range t.ps.GetThreads() {
			if uint64(tid) == pid {
				continue
			}
			c := &pb.CoreEntry{}
			if err := image.ReadOne(dir, image.Core, uint64(tid), c); err != nil {
				return nil, err
			}
			t.threads[tid] = c
		}
		// Zombies have a core but no memory, files or ids.
		if image.Exists(dir, image.IDs, pid) {
			t.ids = &pb.TaskKobjIdsEntry{}
			if err := image.ReadOne(dir, image.IDs, pid, t.ids); err != nil {
				return nil, err
			}
		}
		if image.Exists(dir, image.MM, pid) {
			t.mm = &pb.MmEntry{}
			if err := image.ReadOne(dir, image.MM, pid, t.mm); err != nil {
				return nil, err
			}
		}
		if image.Exists(dir, image.Pagemap, pid) {
			if t.pages, err = image.ReadPagemap(dir, image.Pagemap, pid); err != nil {
				return nil, err
			}
		}
		if image.Exists(dir, image.FS, pid) {
			t.fs = &pb.FsEntry{}
			if err := image.ReadOne(dir, image.FS, pid, t.fs); err != nil {
				return nil, err
			}
		}
		if t.ids != nil && image.Exists(dir, image.Fdinfo, uint64(t.ids.GetFilesId())) {
			es, err := image.ReadFile(dir, image.Fdinfo, uint64(t.ids.GetFilesId()))
			if err != nil {
				return nil, err
			}
			for _, e := range es {
				t.fds = append(t.fds, e.Msg.(*pb.FdinfoEntry))
			}
		}
		s.tasks = append(s.tasks, t)
	}
	if image.Exists(dir, image.Files, 0) {
		es, err := image.ReadFile(dir, image.Files, 0)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			f := e.Msg.(*pb.FileEntry)
			s.files[f.GetId()] = f
		}
	}
	if image.Exists(dir, image.MemfdInode, 0) {
		es, err := image.ReadFile(dir, image.MemfdInode, 0)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			m := e.Msg.(*pb.MemfdInodeEntry)
			s.memfds[m.GetInodeId()] = m
		}
	}
	if image.Exists(dir, image.Seccomp, 0) {
		se := &pb.SeccompEntry{}
		if err := image.ReadOne(dir, image.Seccomp, 0, se); err != nil {
			return nil, err
		}
		s.seccomp = se.GetSeccompFilters()
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read images directory: %w", err)
	}
	var list []string
	for _, n := range names {
		list = append(list, n.Name())
	}
	if s.sysvSets, err = loadSysV(dir, list); err != nil {
		return nil, err
	}
	if image.Exists(dir, image.PipesData, 0) {
		es, err := image.ReadFile(dir, image.PipesData, 0)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			s.pipes[e.Msg.(*pb.PipeDataEntry).GetPipeId()] = e.Payload
		}
	}
	return s, nil
}

func (s *imageSet) tree(w *bufio.Writer) {
	fmt.Fprintf(w, "Process tree (%d tasks)\n", len(s.tasks))
	fmt.Fprintf(w, "  %-8s %-8s %-8s %-8s %-7s %-16s %s\n", "PID", "PPID", "PGID", "SID", "STATE", "COMM", "THREADS")
	children := map[uint32][]*task{}
	known := map[uint32]bool{}
	for _, t := range s.tasks {
		known[t.ps.GetPid()] = true
	}
	var roots []*task
	for _, t := range s.tasks {
		if known[t.ps.GetPpid()] {
			children[t.ps.GetPpid()] = append(children[t.ps.GetPpid()], t)
		} else {
			roots = append(roots, t)
		}
	}
	var walk func(t *task, depth int)
	walk = func(t *task, depth int) {
		p := t.ps
		pid := strings.Repeat("  ", depth) + fmt.Sprint(p.GetPid())
		var th []string
		for _, tid := range p.GetThreads() {
			name := ""
			if c := t.threads[tid]; c != nil && c.GetThreadCore().GetComm() != "" {
				name = "(" + c.GetThreadCore().GetComm() + ")"
			}
			th = append(th, fmt.Sprint(tid)+name)
		}
		fmt.Fprintf(w, "  %-8s %-8d %-8d %-8d %-7s %-16s %s\n", pid, p.GetPpid(), p.GetPgid(), p.GetSid(),
			taskState(t.core.GetTc().GetTaskState(), t.core.GetTc().GetExitCode()), t.core.GetTc().GetComm(), strings.Join(th, ","))
		for _, c := range children[p.GetPid()] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}

// taskState names CRIU's TASK_* values of task_core_entry.task_state.
func taskState(st, exit uint32) string {
	switch st {
	case 1:
		return "alive"
	case 2:
		return fmt.Sprintf("dead(%d)", exit)
	case 3:
		return "stopped"
	case 6:
		return "helper"
	case 7:
		return "thread"
	}
	return fmt.Sprint(st)
}

func (s *imageSet) memory(w *bufio.Writer) {
	fmt.Fprintf(w, "\nMemory\n")
	fmt.Fprintf(w, "  %-8s %6s %12s %12s %12s  %s\n", "PID", "VMAS", "MAPPED", "PAGES SAVED", "BYTES SAVED", "PAGES FILE")
	for _, t := range s.tasks {
		if t.mm == nil {
			fmt.Fprintf(w, "  %-8d (no memory image)\n", t.ps.GetPid())
			continue
		}
		var mapped uint64
		for _, v := range t.mm.GetVmas() {
			mapped += v.GetEnd() - v.GetStart()
		}
		var saved uint64
		file := "-"
		if t.pages != nil {
			for _, r := range t.pages.Runs {
				if r.Offset >= 0 {
					saved += r.NrPages
				}
			}
			file = image.Pages.FileName(uint64(t.pages.PagesID))
		}
		fmt.Fprintf(w, "  %-8d %6d %12s %12d %12s  %s\n", t.ps.GetPid(), len(t.mm.GetVmas()), size(mapped), saved, size(saved*image.PageSize), file)
	}
	// memfds are objects of their own, shared by the tasks' fds and
	// mappings (memfd.img).
	ids := make([]uint64, 0, len(s.memfds))
	for id := range s.memfds {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		m := s.memfds[id]
		fmt.Fprintf(w, "  memfd %d %s: %s, seals %s, mode %o, contents in %s\n", id, pathText("memfd:"+m.GetName()), size(m.GetSize()),
			sealsText(m.GetSeals()), m.GetMode()&0o7777, image.ShmemPagemap.FileName(uint64(m.GetShmid())))
	}
}

func size(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func (s *imageSet) openFiles(w *bufio.Writer) {
	fmt.Fprintf(w, "\nOpen files\n")
	for _, t := range s.tasks {
		fmt.Fprintf(w, "  %d (%s)", t.ps.GetPid(), t.core.GetTc().GetComm())
		if t.ids != nil {
			fmt.Fprintf(w, ", fd table %d", t.ids.GetFilesId())
		}
		w.WriteString("\n")
		if t.fs != nil {
			fmt.Fprintf(w, "    cwd  %s\n", s.describe(t.fs.GetCwdId()))
			fmt.Fprintf(w, "    root %s\n", s.describe(t.fs.GetRootId()))
		}
		fds := append([]*pb.FdinfoEntry(nil), t.fds...)
		sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
		for _, fd := range fds {
			cloexec := ""
			if fd.GetFlags()&1 != 0 {
				cloexec = " cloexec"
			}
			fmt.Fprintf(w, "    %-4d %-9s %s%s\n", fd.GetFd(), fd.GetType(), s.describe(fd.GetId()), cloexec)
		}
	}
}

// describe says what the file with this id is, in one line.
func (s *imageSet) describe(id uint32) string {
	f, ok := s.files[id]
	if !ok {
		return fmt.Sprintf("file id %d (not in files.img)", id)
	}
	switch {
	case f.Reg != nil:
		r := f.Reg
		return fmt.Sprintf("%s (%s, pos %d)", pathText(r.GetName()), openFlags(uint64(r.GetFlags())), r.GetPos())
	case f.Pipe != nil:
		d := ""
		if q, ok := s.pipes[f.Pipe.GetPipeId()]; ok {
			d = fmt.Sprintf(", %d bytes queued", len(q))
		}
		return fmt.Sprintf("pipe:[%d] (%s%s)", f.Pipe.GetPipeId(), openFlags(uint64(f.Pipe.GetFlags())), d)
	case f.Fifo != nil:
		return fmt.Sprintf("fifo pipe:[%d] %s", f.Fifo.GetPipeId(), s.describe(f.Fifo.GetRegfId()))
	case f.Usk != nil:
		u := f.Usk
		name := ""
		if len(u.GetName()) > 0 {
			name = " name " + strings.ReplaceAll(fmt.Sprintf("%q", u.GetName()), `\x00`, "@")
		}
		return fmt.Sprintf("socket:[%d] unix %s, state %d, peer %d%s", u.GetIno(), sockType(u.GetType()), u.GetState(), u.GetPeer(), name)
	case f.Isk != nil:
		i := f.Isk
		return fmt.Sprintf("socket:[%d] inet family %d %s proto %d, ports %d -> %d", i.GetIno(), i.GetFamily(), sockType(i.GetType()), i.GetProto(), i.GetSrcPort(), i.GetDstPort())
	case f.Efd != nil:
		return fmt.Sprintf("eventfd count %d (%s)", f.Efd.GetCounter(), openFlags(uint64(f.Efd.GetFlags())))
	case f.Tfd != nil:
		t := f.Tfd
		return fmt.Sprintf("timerfd clock %d, next in %d.%09ds, interval %d.%09ds, %d ticks", t.GetClockid(), t.GetVsec(), t.GetVnsec(), t.GetIsec(), t.GetInsec(), t.GetTicks())
	case f.Sgfd != nil:
		return fmt.Sprintf("signalfd mask %#x", f.Sgfd.GetSigmask())
	case f.Epfd != nil:
		return fmt.Sprintf("epoll, %d targets", len(f.Epfd.GetTfd()))
	case f.Ify != nil:
		return fmt.Sprintf("inotify, %d watches", len(f.Ify.GetWd()))
	case f.Memfd != nil:
		m := s.memfds[uint64(f.Memfd.GetInodeId())]
		if m == nil {
			return fmt.Sprintf("memfd inode %d (not in memfd.img) (%s, pos %d)", f.Memfd.GetInodeId(), openFlags(uint64(f.Memfd.GetFlags())), f.Memfd.GetPos())
		}
		return fmt.Sprintf("%s (%s, pos %d), memfd %d", pathText("memfd:"+m.GetName()), openFlags(uint64(f.Memfd.GetFlags())),
			f.Memfd.GetPos(), f.Memfd.GetInodeId())
	case f.Tty != nil:
		return fmt.Sprintf("tty info %d", f.Tty.GetTtyInfoId())
	case f.Nsf != nil:
		return fmt.Sprintf("namespace %d", f.Nsf.GetNsId())
	case f.Psk != nil:
		return "packet socket"
	case f.Nlsk != nil:
		return fmt.Sprintf("netlink socket protocol %d", f.Nlsk.GetProtocol())
	}
	return f.GetType().String()
}

// pathText keeps a summary line on one line: a path with control
// characters (a newline is legal in a file name) is shown quoted.
func pathText(p string) string {
	if strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 || !utf8.ValidString(p) {
		return strconv.Quote(p)
	}
	return p
}

func sockType(t uint32) string {
	switch t {
	case 1:
		return "stream"
	case 2:
		return "dgram"
	case 5:
		return "seqpacket"
	}
	return fmt.Sprintf("type %d", t)
}

// sealsText names memfd seals (F_SEAL_*, linux/fcntl.h).
func sealsText(seals uint32) string {
	if seals == 0 {
		return "none"
	}
	var out []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{0x1, "SEAL"}, {0x2, "SHRINK"}, {0x4, "GROW"}, {0x8, "WRITE"}, {0x10, "FUTURE_WRITE"}, {0x20, "EXEC"}} {
		if seals&b.bit != 0 {
			out = append(out, b.name)
			seals &^= b.bit
		}
	}
	if seals != 0 {
		out = append(out, fmt.Sprintf("%#x", seals))
	}
	return strings.Join(out, "|")
}

// seccompModes lists the threads under seccomp: strict, or their filters
// from the oldest (seccomp.img's index, instructions and flags). Nothing
// when no thread is.
func (s *imageSet) seccompModes(w *bufio.Writer) {
	var lines []string
	for _, t := range s.tasks {
		for _, tid := range t.ps.GetThreads() {
			c := t.threads[tid]
			if tid == t.ps.GetPid() {
				c = t.core
			}
			tc := c.GetThreadCore()
			switch tc.GetSeccompMode() {
			case pb.SeccompMode_disabled:
				continue
			case pb.SeccompMode_strict:
				lines = append(lines, fmt.Sprintf("  %-8d %-8d strict", t.ps.GetPid(), tid))
				continue
			}
			lines = append(lines, fmt.Sprintf("  %-8d %-8d filter   %s", t.ps.GetPid(), tid, s.seccompChain(tc)))
		}
	}
	if len(lines) == 0 && len(s.seccomp) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSeccomp (%d filters in seccomp.img; a thread without a line has none, or its leader's with TSYNC)\n", len(s.seccomp))
	fmt.Fprintf(w, "  %-8s %-8s %-8s %s\n", "PID", "TID", "MODE", "FILTERS, THE OLDEST FIRST: #INDEX INSTRUCTIONS [FLAGS]")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// seccompChain describes the filters of a thread core in filter mode.
func (s *imageSet) seccompChain(tc *pb.ThreadCoreEntry) string {
	if tc.SeccompFilter == nil {
		return "(no filter index)"
	}
	var parts []string
	for i := tc.GetSeccompFilter(); ; {
		if int(i) >= len(s.seccomp) {
			return strings.Join(append(parts, fmt.Sprintf("#%d (not in seccomp.img)", i)), ", ")
		}
		if len(parts) == len(s.seccomp) {
			return strings.Join(append(parts, "(loop)"), ", ")
		}
		f := s.seccomp[i]
		p := fmt.Sprintf("#%d %d", i, len(f.GetFilter())/8)
		var names []string
		for _, fl := range []flagName{{1, "TSYNC"}, {2, "LOG"}, {4, "SPEC_ALLOW"}} {
			if f.GetFlags()&uint32(fl.bit) != 0 {
				names = append(names, fl.name)
			}
		}
		if rest := f.GetFlags() &^ 7; rest != 0 {
			names = append(names, fmt.Sprintf("%#x", rest))
		}
		if len(names) > 0 {
			p += " [" + strings.Join(names, "|") + "]"
		}
		parts = append(parts, p)
		if f.Prev == nil {
			return strings.Join(parts, ", ")
		}
		i = f.GetPrev()
	}
}
