package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/engine/image/imagetest"
	"github.com/crtools/crtools/test/harness"
)

// TestDumpImagesVTMatchesReflection dumps the workload that holds one of
// each kind of state (testdata/dump_layout.c) and checks every image the
// dump wrote: engine/image's generated encoder and decoder (which the dump
// used) agree byte for byte with protobuf-go's reflection-based ones, and
// writing the entries back gives each file unchanged.
func TestDumpImagesVTMatchesReflection(t *testing.T) {
	harness.RequireRoot(t)
	w := harness.StartWorkload(t, buildLayout(t))
	w.MustReady(10 * time.Second)
	dir := dumpDir(t, w, "-R")
	w.MustVerify(10 * time.Second)
	files, entries := imagetest.CheckEncodings(t, dir, true)
	if files < 10 || entries < 30 {
		t.Fatalf("checked only %d image files, %d entries", files, entries)
	}
	t.Logf("%d image files, %d entries", files, entries)
	// crtools show is reflective: its fresh process registers the
	// descriptors on first use (engine/image/pb's doc.go), and must
	// render the same entries.
	core := filepath.Join(dir, fmt.Sprintf("core-%d.img", w.Pid))
	for _, args := range [][]string{{"show", "-f", core}, {"show", "-f", core, "--json"}} {
		code, out := crtools(t, args...)
		if code != 0 || !strings.Contains(out, "X86_64") || !strings.Contains(out, "lay out(x)") {
			t.Errorf("crtools %v: exit %d, want the core's mtype X86_64 and comm lay out(x):\n%s", args, code, out)
		}
	}
}

// checkNoReflection checks the log of a crtools run (-v 2) in the
// workload's directory: the run did not register protobuf descriptors,
// that is, it read and wrote its images without protobuf-go's reflection
// (engine/image/pb's doc.go says why: several ms of every run).
func checkNoReflection(t *testing.T, w *harness.Workload, name string) {
	t.Helper()
	log := readLog(w, name)
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "protobuf descriptors") {
			continue
		}
		if !strings.Contains(l, "registered=false") {
			t.Errorf("%s: the run used protobuf reflection (%q); find what with CRTOOLS_CPUPROFILE or a breakpoint in pb.registerSlow", name, l)
		}
		return
	}
	t.Errorf("%s has no protobuf descriptors line:\n%s", name, log)
}
