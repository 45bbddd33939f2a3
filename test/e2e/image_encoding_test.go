package e2e

import (
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
}
