package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/harness"
)

// crtPattern is crt.h's crt_pattern.
func crtPattern(seed, i uint64) byte { return byte(((seed + i) * 0x9E3779B97F4A7C15) >> 56) }

func checkPattern(t *testing.T, what string, b []byte, seed uint64) {
	t.Helper()
	for i := range b {
		if b[i] != crtPattern(seed, uint64(i)) {
			t.Errorf("%s: byte %d is %#x, want %#x", what, i, b[i], crtPattern(seed, uint64(i)))
			return
		}
	}
}

func readLayout(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("layout line %q: %v", sc.Text(), err)
		}
		out[k] = n
	}
	return out
}

func buildLayout(t *testing.T) string {
	return buildTestdata(t, "dump_layout.c", "-I"+harness.WorkloadsDir(t), "-lrt")
}

// dumpDir runs crtools dump with extra options and returns the images
// directory (which must exist afterwards).
func dumpDir(t *testing.T, w *harness.Workload, opts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "images")
	args := append([]string{"dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log")}, opts...)
	code, out := crtools(t, args...)
	if code != 0 {
		t.Fatalf("crtools %v: exit %d\n%s\n%s", args, code, out, readLog(w, "dump.log"))
	}
	return dir
}

// TestDumpImagesContents dumps a workload that holds one of each kind of
// state (testdata/dump_layout.c) with -R and checks every image against
// what the workload says it set up: VMAs of each kind, page contents,
// files with offsets and flags, signals, timers, rlimits, registers.
func TestDumpImagesContents(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, buildLayout(t))
	w.MustReady(10 * time.Second)
	lay := readLayout(t, filepath.Join(w.Dir, "layout"))
	dir := dumpDir(t, w, "-R")
	// -R: the workload runs on, untraced, intact.
	if tr := tracerOf(w.Pid); tr != 0 {
		t.Errorf("after dump -R, pid %d is traced by %d", w.Pid, tr)
	}
	w.MustVerify(10 * time.Second)

	pid := uint64(w.Pid)
	var pstree []*image.Entry
	pstree, err := image.ReadFile(dir, image.Pstree, 0)
	if err != nil || len(pstree) != 1 || pstree[0].Msg.(*pb.PstreeEntry).GetPid() != uint32(pid) {
		t.Fatalf("pstree: %v %v", pstree, err)
	}
	var core pb.CoreEntry
	if err := image.ReadOne(dir, image.Core, pid, &core); err != nil {
		t.Fatal(err)
	}
	var mm pb.MmEntry
	if err := image.ReadOne(dir, image.MM, pid, &mm); err != nil {
		t.Fatal(err)
	}
	var fs pb.FsEntry
	if err := image.ReadOne(dir, image.FS, pid, &fs); err != nil {
		t.Fatal(err)
	}
	var ids pb.TaskKobjIdsEntry
	if err := image.ReadOne(dir, image.IDs, pid, &ids); err != nil {
		t.Fatal(err)
	}
	fileEntries, err := image.ReadFile(dir, image.Files, 0)
	if err != nil {
		t.Fatal(err)
	}
	files := map[uint32]*pb.FileEntry{}
	for _, e := range fileEntries {
		f := e.Msg.(*pb.FileEntry)
		files[f.GetId()] = f
	}

	t.Run("task", func(t *testing.T) {
		tc := core.GetTc()
		if tc.GetComm() != "lay out(x)" || tc.GetTaskState() != 1 {
			t.Errorf("comm %q state %d", tc.GetComm(), tc.GetTaskState())
		}
		if fs.GetUmask() != 0o27 {
			t.Errorf("umask %o", fs.GetUmask())
		}
		if cwd := files[fs.GetCwdId()].GetReg().GetName(); cwd != w.Dir {
			t.Errorf("cwd %q, want %q", cwd, w.Dir)
		}
		if n := tc.GetRlimits().GetRlimits(); len(n) != 16 || n[unix.RLIMIT_NOFILE].GetCur() != 777 {
			t.Errorf("rlimits %v", n)
		}
		if pd := core.GetThreadCore().GetPdeathSig(); pd != uint32(unix.SIGHUP) {
			t.Errorf("pdeath signal %d", pd)
		}
		if exe := files[mm.GetExeFileId()].GetReg().GetName(); filepath.Base(exe) != filepath.Base(w.Bin) {
			t.Errorf("exe %q, want %q", exe, w.Bin)
		}
		if len(mm.GetMmSavedAuxv()) < 4 || mm.GetMmArgStart() == 0 || mm.GetMmArgEnd() <= mm.GetMmArgStart() ||
			mm.GetMmBrk() < mm.GetMmStartBrk() {
			t.Errorf("mm fields: %v", &mm)
		}
	})

	t.Run("signals", func(t *testing.T) {
		sa := core.GetTc().GetSigactions()
		if len(sa) != 62 {
			t.Fatalf("%d sigactions", len(sa))
		}
		idx := func(sig int) int { // CRIU layout: 1..64 without 9 and 19
			i := sig - 1
			if sig > 9 {
				i--
			}
			if sig > 19 {
				i--
			}
			return i
		}
		winch := sa[idx(int(unix.SIGWINCH))]
		const saOnstack, saRestart, saRestorer = 0x08000000, 0x10000000, 0x04000000
		if winch.GetSigaction() == 0 || winch.GetFlags()&(saRestart|saOnstack|saRestorer) != saRestart|saOnstack|saRestorer ||
			winch.GetMask()&(1<<(unix.SIGINT-1)) == 0 {
			t.Errorf("SIGWINCH action %v", winch)
		}
		if p := sa[idx(int(unix.SIGPIPE))].GetSigaction(); p != 1 {
			t.Errorf("SIGPIPE handler %#x, want SIG_IGN", p)
		}
		if d := sa[idx(int(unix.SIGTERM))].GetSigaction(); d != 0 {
			t.Errorf("SIGTERM handler %#x, want SIG_DFL", d)
		}
		rt := lay["sigrt"]
		if core.GetThreadCore().GetBlkSigset()&(1<<(rt-1)) == 0 {
			t.Errorf("blocked mask %#x lacks signal %d", core.GetThreadCore().GetBlkSigset(), rt)
		}
		var found bool
		for _, s := range core.GetTc().GetSignalsS().GetSignals() {
			si := s.GetSiginfo()
			// siginfo: si_signo at 0, si_value at 24 for SI_QUEUE.
			if len(si) == 128 && binary.LittleEndian.Uint32(si) == uint32(rt) && binary.LittleEndian.Uint32(si[24:]) == 4242 {
				found = true
			}
		}
		if !found {
			t.Errorf("queued signal %d with value 4242 not in the shared queue: %v", rt, core.GetTc().GetSignalsS())
		}
		sas := core.GetThreadCore().GetSas()
		if sas.GetSsSp() != lay["altstack"] || sas.GetSsSize() != 65536 {
			t.Errorf("sigaltstack %v, want sp %#x", sas, lay["altstack"])
		}
	})

	t.Run("timers", func(t *testing.T) {
		tm := core.GetTc().GetTimers()
		if r := tm.GetReal(); r.GetIsec() != 5 || r.GetVsec() < 2900 || r.GetVsec() > 3000 {
			t.Errorf("ITIMER_REAL %v", r)
		}
		if len(tm.GetPosix()) != 1 {
			t.Fatalf("posix timers %v", tm.GetPosix())
		}
		p := tm.GetPosix()[0]
		if p.GetClockId() != unix.CLOCK_MONOTONIC || p.GetSiSigno() != uint32(lay["sigrt"]+1) || p.GetSivalPtr() != 0x1234 ||
			p.GetIsec() != 60 || p.GetVsec() < 3500 || p.GetVsec() > 3600 {
			t.Errorf("POSIX timer %v", p)
		}
	})

	t.Run("registers", func(t *testing.T) {
		regs := core.GetThreadInfo().GetGpregs()
		var ipOK, spOK bool
		for _, v := range mm.GetVmas() {
			if regs.GetIp() >= v.GetStart() && regs.GetIp() < v.GetEnd() && v.GetProt()&unix.PROT_EXEC != 0 {
				ipOK = true
			}
			if regs.GetSp() >= v.GetStart() && regs.GetSp() < v.GetEnd() && v.GetFlags()&unix.MAP_GROWSDOWN != 0 {
				spOK = true
			}
		}
		if !ipOK || !spOK || regs.GetFsBase() == 0 || regs.GetCs() != 0x33 {
			t.Errorf("registers %v: ip in code %v, sp in stack %v", regs, ipOK, spOK)
		}
		fp := core.GetThreadInfo().GetFpregs()
		if fp.GetMxcsr()&0xffc0 != 0x1f80 || len(fp.GetXmmSpace()) != 64 || fp.GetXsave() == nil {
			t.Errorf("fpregs mxcsr %#x xmm %d xsave %v", fp.GetMxcsr(), len(fp.GetXmmSpace()), fp.GetXsave() != nil)
		}
	})

	vma := func(addr uint64) *pb.VmaEntry {
		for _, v := range mm.GetVmas() {
			if v.GetStart() == addr {
				return v
			}
		}
		t.Fatalf("no VMA starts at %#x", addr)
		return nil
	}
	const (
		regular, vdso, heap, filePriv, fileShared, anonShared, anonPriv, vvar = 1, 8, 32, 64, 128, 256, 512, 4096
	)
	t.Run("vmas", func(t *testing.T) {
		if v := vma(lay["anon"]); v.GetStatus() != regular|anonPriv || v.GetEnd()-v.GetStart() < 16*4096 || // the kernel may merge a neighbour
			v.GetProt() != unix.PROT_READ|unix.PROT_WRITE || v.GetFlags() != unix.MAP_PRIVATE|unix.MAP_ANONYMOUS {
			t.Errorf("anon %v", v)
		}
		if v := vma(lay["ro"]); v.GetProt() != unix.PROT_READ {
			t.Errorf("read-only %v", v)
		}
		if v := vma(lay["none"]); v.GetProt() != 0 || v.GetStatus() != regular|anonPriv {
			t.Errorf("PROT_NONE %v", v)
		}
		cow := vma(lay["cow"])
		if cow.GetStatus() != regular|filePriv || !strings.HasSuffix(files[uint32(cow.GetShmid())].GetReg().GetName(), "/data file with spaces") {
			t.Errorf("private file mapping %v -> %v", cow, files[uint32(cow.GetShmid())])
		}
		sh := vma(lay["shfile"])
		if sh.GetStatus() != regular|fileShared || sh.GetPgoff() != 4096 || sh.GetFlags()&unix.MAP_SHARED == 0 ||
			sh.GetShmid() != cow.GetShmid() && files[uint32(sh.GetShmid())].GetReg().GetName() != files[uint32(cow.GetShmid())].GetReg().GetName() {
			t.Errorf("shared file mapping %v", sh)
		}
		if v := vma(lay["shanon"]); v.GetStatus()&(regular|anonShared) != regular|anonShared || v.GetShmid() == 0 {
			t.Errorf("shared anon %v", v)
		}
		var sawVdso, sawVvar, sawHeap bool
		for _, v := range mm.GetVmas() {
			sawVdso = sawVdso || v.GetStatus()&vdso != 0
			sawVvar = sawVvar || v.GetStatus()&vvar != 0
			sawHeap = sawHeap || v.GetStatus()&heap != 0
		}
		if !sawVdso || !sawVvar || !sawHeap {
			t.Errorf("vdso %v vvar %v heap %v", sawVdso, sawVvar, sawHeap)
		}
	})

	t.Run("pages", func(t *testing.T) {
		pr, err := image.OpenPages(dir, image.Pagemap, pid)
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		page := make([]byte, 4096)
		read := func(addr uint64) int {
			missing, err := pr.ReadAt(page, addr)
			if err != nil {
				t.Fatalf("read page at %#x: %v", addr, err)
			}
			return missing
		}
		for p := uint64(0); p < 16; p++ {
			m := read(lay["anon"] + p*4096)
			if p == 3 {
				if m != 4096 {
					t.Errorf("never-touched anon page 3 is in the image")
				}
				continue
			}
			if m != 0 {
				t.Errorf("anon page %d missing", p)
				continue
			}
			checkPattern(t, fmt.Sprintf("anon page %d", p), page, 100+p)
		}
		if read(lay["ro"]) == 0 {
			checkPattern(t, "read-only page", page, 7)
		} else {
			t.Error("read-only page missing")
		}
		for p := uint64(0); p < 2; p++ {
			if read(lay["none"]+p*4096) != 0 {
				t.Errorf("PROT_NONE page %d missing", p)
				continue
			}
			b := make([]byte, 4096)
			copy(b, page)
			full := make([]byte, 8192)
			copy(full[p*4096:], b)
			for i := uint64(0); i < 4096; i++ {
				if page[i] != crtPattern(8, p*4096+i) {
					t.Errorf("PROT_NONE page %d byte %d wrong", p, i)
					break
				}
			}
		}
		if read(lay["cow"]) != 4096 {
			t.Error("unmodified page of a private file mapping is in the image")
		}
		if read(lay["cow"]+4096) == 0 {
			checkPattern(t, "copied-on-write page", page, 300)
		} else {
			t.Error("copied-on-write page missing")
		}
		if read(lay["shfile"]) != 4096 {
			t.Error("page of a shared file mapping is in the private pagemap")
		}
	})

	t.Run("shmem", func(t *testing.T) {
		v := vma(lay["shanon"])
		pr, err := image.OpenPages(dir, image.ShmemPagemap, v.GetShmid())
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		if len(pr.Index.Runs) != 1 || pr.Index.Runs[0].Vaddr != 2*4096 || pr.Index.Runs[0].NrPages != 1 {
			t.Fatalf("shmem runs %+v, want only page 2", pr.Index.Runs)
		}
		b, err := pr.ReadRun(0)
		if err != nil {
			t.Fatal(err)
		}
		checkPattern(t, "shared anonymous page", b, 400)
	})

	t.Run("files", func(t *testing.T) {
		fdinfo, err := image.ReadFile(dir, image.Fdinfo, uint64(ids.GetFilesId()))
		if err != nil {
			t.Fatal(err)
		}
		byFd := map[uint64]*pb.FdinfoEntry{}
		for _, e := range fdinfo {
			f := e.Msg.(*pb.FdinfoEntry)
			byFd[uint64(f.GetFd())] = f
		}
		reg := func(fd uint64) (*pb.FdinfoEntry, *pb.RegFileEntry) {
			fi := byFd[fd]
			if fi == nil {
				t.Fatalf("fd %d not dumped", fd)
			}
			return fi, files[fi.GetId()].GetReg()
		}
		fi, r := reg(lay["fd"])
		if r.GetPos() != 5000 || r.GetFlags()&unix.O_ACCMODE != unix.O_RDWR || fi.GetFlags() != 0 ||
			r.GetName() != filepath.Join(w.Dir, "data file with spaces") || r.GetSize() != 4*4096 {
			t.Errorf("data file fd %v %v", fi, r)
		}
		fi, r = reg(lay["afd"])
		if r.GetFlags()&unix.O_APPEND == 0 || fi.GetFlags() != unix.FD_CLOEXEC || r.GetPos() != 3 {
			t.Errorf("append fd %v %v", fi, r)
		}
		if _, r = reg(lay["dfd"]); r.GetName() != w.Dir || r.GetMode()&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("directory fd %v", r)
		}
		if _, r = reg(lay["mfd"]); r.GetName() != "/dev/null" || r.GetMode()&unix.S_IFMT != unix.S_IFCHR {
			t.Errorf("/dev/null fd %v", r)
		}
	})
}
