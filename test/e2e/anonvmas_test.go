package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/crtools/crtools/engine/proc"
	"github.com/crtools/crtools/test/harness"
)

// TestAnonVMAsRestoredExactly: a restored process has the VMAs of the
// dumped one, each with its range, protection and smaps VmFlags: around
// two regions of adjacent private anonymous VMAs of different
// protections, pages and madvise state (anonvmas.c), which restore maps
// in runs (anonRun: one mmap and an mprotect of each VMA that differs),
// and everywhere else but the vDSO.
func TestAnonVMAsRestoredExactly(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "anonvmas.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	a, b := addrFile(t, w.Dir, "region_a"), addrFile(t, w.Dir, "region_b")
	before := vmaLines(t, w.Pid)
	dir := dumpKill(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	after := vmaLines(t, w.Pid)
	for _, r := range []struct {
		name       string
		start, end uint64
	}{{"a", a, a + 16*4096}, {"b", b, b + 4*4096}} {
		n := 0
		for _, m := range before {
			if m.start < r.end && m.end > r.start {
				n++
			}
		}
		if n < 4 {
			t.Errorf("region %s at %#x: %d VMAs before the dump, want several (the workload did not set it up)", r.name, r.start, n)
		}
	}
	if len(after) != len(before) {
		t.Errorf("restored process has %d VMAs, the dumped one had %d", len(after), len(before))
	}
	for i := range min(len(before), len(after)) {
		if before[i] != after[i] {
			t.Errorf("VMA %d: restored %v, dumped %v", i, after[i], before[i])
		}
	}
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// vma is what TestAnonVMAsRestoredExactly compares of a VMA.
type vma struct {
	start, end uint64
	perms      string
	path       string
	flags      string
}

// vmaLines reads pid's VMAs from its smaps, but for the vDSO's (vdso,
// vvar), which a restore keeps where the kernel put them.
func vmaLines(t *testing.T, pid int) []vma {
	t.Helper()
	maps, err := proc.ReadSmaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var out []vma
	for _, m := range maps {
		switch m.Path {
		case "[vdso]", "[vvar]", "[vvar_vclock]":
			continue
		}
		perms := []byte("---p")
		for i, on := range []bool{m.Read, m.Write, m.Exec} {
			if on {
				perms[i] = "rwx"[i]
			}
		}
		if m.Shared {
			perms[3] = 's'
		}
		out = append(out, vma{m.Start, m.End, string(perms), m.Path, m.VmFlags})
	}
	return out
}

func (v vma) String() string {
	return fmt.Sprintf("%#x-%#x %s %s [%s]", v.start, v.end, v.perms, v.path, v.flags)
}
