package kernel_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/kernel"
	"github.com/crtools/crtools/test/harness"
)

// TestCheckThisKernel runs every probe. The engine targets kernels like
// the one CI runs on (6.x), where every feature, optional ones included,
// must work.
func TestCheckThisKernel(t *testing.T) {
	harness.RequireRoot(t)
	harness.RequireKernel(t, "6.7", "PAGEMAP_SCAN and userfaultfd WP_ASYNC")
	before := children(t)
	vdsoBefore := vdso(t)
	rep := kernel.Check(kernel.Options{})
	if len(rep.Features) != len(kernel.Features()) {
		t.Fatalf("%d results for %d features", len(rep.Features), len(kernel.Features()))
	}
	for _, r := range rep.Features {
		if !r.OK {
			t.Errorf("%s (required %v): %s", r.Name, r.Required, r.Error)
		}
	}
	if !rep.OK || len(rep.MissingRequired) != 0 || len(rep.MissingOptional) != 0 {
		t.Errorf("report: ok %v, missing required %v, optional %v", rep.OK, rep.MissingRequired, rep.MissingOptional)
	}
	// Check leaves no child behind and does not touch our own vDSO.
	if after := children(t); after != before {
		t.Errorf("children before Check %q, after %q", before, after)
	}
	if v := vdso(t); v != vdsoBefore {
		t.Errorf("own vDSO moved: %q -> %q", vdsoBefore, v)
	}
}

func TestProbeByName(t *testing.T) {
	harness.RequireRoot(t)
	if err := kernel.Probe("clone3-set_tid"); err != nil {
		t.Fatal(err)
	}
	var unk *kernel.ErrUnknownFeature
	if err := kernel.Probe("no-such-feature"); !errors.As(err, &unk) {
		t.Fatalf("Probe of an unknown name: %v", err)
	}
}

func TestCheckOnly(t *testing.T) {
	harness.RequireRoot(t)
	rep := kernel.Check(kernel.Options{Only: []string{"memfd", "kcmp"}, MainlineOnly: true})
	if len(rep.Features) != 2 || rep.Features[0].Name != "kcmp" || rep.Features[1].Name != "memfd" {
		t.Fatalf("Only memfd,kcmp gave %+v", rep.Features)
	}
}

func children(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var all []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			all = append(all, strings.Fields(string(b))...)
		}
	}
	return strings.Join(all, " ")
}

func vdso(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, "[vdso]") {
			return strings.Fields(l)[0]
		}
	}
	return ""
}
