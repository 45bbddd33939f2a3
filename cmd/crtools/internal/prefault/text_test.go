//go:build linux && amd64

package prefault

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/crtools/crtools/test/harness"
)

// smapsEntry is one mapping of /proc/PID/smaps with the fields the tests
// read (in kB).
type smapsEntry struct {
	start, end          uintptr
	perms, path         string
	size, anonHuge, rss int
	filePmd             int
}

var smapsHeader = regexp.MustCompile(`^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$`)

func parseSmaps(t *testing.T, data []byte) []smapsEntry {
	t.Helper()
	var es []smapsEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if m := smapsHeader.FindStringSubmatch(line); m != nil {
			start, _ := strconv.ParseUint(m[1], 16, 64)
			end, _ := strconv.ParseUint(m[2], 16, 64)
			es = append(es, smapsEntry{start: uintptr(start), end: uintptr(end), perms: m[3], path: m[4]})
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || len(es) == 0 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		if err != nil {
			continue
		}
		switch e := &es[len(es)-1]; k {
		case "Size":
			e.size = n
		case "Rss":
			e.rss = n
		case "AnonHugePages":
			e.anonHuge = n
		case "FilePmdMapped":
			e.filePmd = n
		}
	}
	if len(es) < 10 {
		t.Fatalf("parsed %d mappings from smaps, a Go process has more:\n%s", len(es), data)
	}
	return es
}

// atExit runs crtools with args and env, stops it when it exits (a
// ptrace exit stop: its address space is still whole) and returns its
// smaps and the bytes of each of segs read from its memory.
func atExit(t *testing.T, bin string, env []string, segs []*elf.Prog, args ...string) ([]smapsEntry, [][]byte) {
	t.Helper()
	// The tracer is the thread that started the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	pid := cmd.Process.Pid
	killed := false
	defer func() {
		if !killed {
			syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WALL, nil)
		}
	}()
	wait := func() syscall.WaitStatus {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, syscall.WALL, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				t.Fatalf("wait for crtools: %v", err)
			}
			return ws
		}
	}
	if ws := wait(); !ws.Stopped() || ws.StopSignal() != syscall.SIGTRAP {
		t.Fatalf("crtools after exec: status %#x, want the exec stop", ws)
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT|0x100000 /* PTRACE_O_EXITKILL, not in package syscall */); err != nil {
		t.Fatalf("ptrace setoptions: %v", err)
	}
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			t.Fatalf("ptrace cont: %v", err)
		}
		ws := wait()
		if ws.Exited() || ws.Signaled() {
			killed = true
			t.Fatalf("crtools ended (status %#x) without an exit stop", ws)
		}
		if ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT {
			break
		}
		// A signal for crtools (the Go runtime's SIGURG): deliver it.
		sig = int(ws.StopSignal())
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var got [][]byte
	for _, p := range segs {
		b := make([]byte, p.Filesz)
		if _, err := mem.ReadAt(b, int64(p.Vaddr)); err != nil {
			t.Fatalf("read crtools' memory at %#x: %v", p.Vaddr, err)
		}
		got = append(got, b)
	}
	if err := syscall.PtraceCont(pid, 0); err != nil {
		t.Fatalf("ptrace cont: %v", err)
	}
	ws := wait()
	killed = true
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("crtools %v: status %#x, want exit 0", args, ws)
	}
	return parseSmaps(t, smaps), got
}

// hugeRanges returns the read-only loadable segments of the ELF file f
// and the whole 2 MiB ranges in them: what hugeText moves.
func hugeRanges(t *testing.T, f *elf.File) (segs []*elf.Prog, ranges [][2]uintptr, perms []string) {
	t.Helper()
	if f.Type != elf.ET_EXEC {
		t.Fatalf("crtools is %v, want an executable at fixed addresses (CGO_ENABLED=0, not PIE)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_W != 0 {
			continue
		}
		segs = append(segs, p)
		perm := "r--p"
		if p.Flags&elf.PF_X != 0 {
			perm = "r-xp"
		}
		end := (uintptr(p.Vaddr+p.Filesz) + pageSize - 1) &^ (pageSize - 1)
		for a := (uintptr(p.Vaddr) + hugePage - 1) &^ (hugePage - 1); a+hugePage <= end; a += hugePage {
			ranges = append(ranges, [2]uintptr{a, a + hugePage})
			perms = append(perms, perm)
		}
	}
	return segs, ranges, perms
}

// checkText checks crtools' memory at its exit: each 2 MiB range of
// ranges is held by one mapping with perms, either of bin or anonymous and
// all on huge pages; and the bytes of every read-only segment are the
// file's. It returns how many ranges were moved onto anonymous huge pages
// and how many are mapped from huge folios of the file (FilePmdMapped).
func checkText(t *testing.T, bin string, es []smapsEntry, segs []*elf.Prog, mem [][]byte, ranges [][2]uintptr, perms []string) (moved, filePMD int) {
	t.Helper()
	pmdLeft := map[*smapsEntry]int{} // FilePmdMapped of each mapping, in ranges
	for i, r := range ranges {
		var e *smapsEntry
		for j := range es {
			if es[j].start <= r[0] && r[1] <= es[j].end {
				e = &es[j]
			}
		}
		switch {
		case e == nil:
			t.Errorf("%#x-%#x: no single mapping holds it", r[0], r[1])
		case e.perms != perms[i]:
			t.Errorf("%#x-%#x: mapping %#x-%#x %s, want %s", r[0], r[1], e.start, e.end, e.perms, perms[i])
		case e.path == bin:
			left, ok := pmdLeft[e]
			if !ok {
				left = e.filePmd / (hugePage >> 10)
			}
			if left > 0 {
				filePMD++
				left--
			}
			pmdLeft[e] = left
		case e.path != "":
			t.Errorf("%#x-%#x: mapped from %q, want %s or anonymous", r[0], r[1], e.path, bin)
		case e.anonHuge != e.size || e.rss != e.size:
			t.Errorf("%#x-%#x: anonymous mapping %#x-%#x of %d kB: AnonHugePages %d kB, Rss %d kB, want all", r[0], r[1], e.start, e.end, e.size, e.anonHuge, e.rss)
		default:
			moved++
		}
	}
	for i, p := range segs {
		want := make([]byte, p.Filesz)
		if _, err := p.ReadAt(want, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mem[i], want) {
			n := 0
			for n < len(want) && mem[i][n] == want[n] {
				n++
			}
			t.Errorf("segment at %#x: memory differs from the file at %#x", p.Vaddr, p.Vaddr+uint64(n))
		}
	}
	return moved, filePMD
}

// freshCopy copies crtools to a new file next to it (the same file
// system), 4 KiB a write: its page cache then holds small folios, as after
// go build, cp or an install. (One write of the whole file would leave
// huge folios on ext4.)
func freshCopy(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(bin), "hugetext-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "crtools")
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		n := min(len(b), pageSize)
		if _, err := out.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// hugeTextExpected reports whether hugeText works for bin here, with the
// reason when not: THP not off, Linux 6.16 or newer, and bin on ext4 or
// XFS (largeFolioFS).
func hugeTextExpected(t *testing.T, bin string) (bool, string) {
	t.Helper()
	thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || bytes.Contains(thp, []byte("[never]")) {
		return false, fmt.Sprintf("THP is off (%q, %v)", bytes.TrimSpace(thp), err)
	}
	if rel, err := harness.KernelRelease(); err != nil {
		t.Fatal(err)
	} else if ok, err := harness.KernelAtLeast(rel, "6.16"); err != nil || !ok {
		return false, fmt.Sprintf("kernel %s before 6.16 (%v)", rel, err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(bin, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != 0xef53 && st.Type != 0x58465342 {
		return false, fmt.Sprintf("%s is on a file system of type %#x, not ext4 or XFS", bin, st.Type)
	}
	return true, ""
}

// TestHugeText runs a fresh copy of crtools until its text and read-only
// data are mapped from huge folios of its page cache: the first runs move
// them onto anonymous huge pages and have the page cache read them again
// in huge folios (a run stops at a huge page slow to get, so on a busy
// host that may take a few runs). At each run's exit, every whole 2 MiB
// range of them is on huge pages or still mapped from the file, with the
// file's bytes. Where hugeText cannot work (hugeTextExpected), no range
// may move; and NoHugeTextEnv leaves the file mapping alone.
func TestHugeText(t *testing.T) {
	bin := freshCopy(t, harness.BuildCrtools(t))
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	segs, ranges, perms := hugeRanges(t, f)
	if len(ranges) < 3 {
		t.Fatalf("crtools' read-only segments hold %d whole 2 MiB ranges, want its ~6 MiB of text's 3 at least", len(ranges))
	}
	expected, why := hugeTextExpected(t, bin)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, NoHugeTextEnv+"=") {
			env = append(env, kv)
		}
	}

	es, mem := atExit(t, bin, append(env, NoHugeTextEnv+"=1"), segs, "--version")
	if moved, pmd := checkText(t, bin, es, segs, mem, ranges, perms); moved != 0 || pmd != 0 {
		t.Errorf("with %s=1: %d ranges moved, %d mapped from huge folios; want none (the page cache of a fresh copy holds small folios)", NoHugeTextEnv, moved, pmd)
	}

	var runs []string
	everMoved, done := 0, false
	for range 15 {
		es, mem := atExit(t, bin, env, segs, "--version")
		moved, pmd := checkText(t, bin, es, segs, mem, ranges, perms)
		runs = append(runs, fmt.Sprintf("%d moved %d from huge folios", moved, pmd))
		everMoved += moved
		if !expected || pmd == len(ranges) || t.Failed() {
			done = pmd == len(ranges)
			break
		}
	}
	t.Logf("%d ranges of 2 MiB; runs: %s", len(ranges), strings.Join(runs, "; "))
	switch {
	case expected && (!done || everMoved == 0):
		t.Errorf("want runs that move ranges until all are mapped from huge folios of the page cache")
	case !expected && (everMoved != 0 || done):
		t.Errorf("hugeText cannot work here (%s), yet it moved %d ranges", why, everMoved)
	}
}
