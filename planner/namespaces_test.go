package planner

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/spec"
)

// TestNamespacesPlan: a checkpoint spec may ask for every namespace of
// crtools(1) (the plan names them), root is a restore option (a restore
// plan takes it, a checkpoint plan refuses it), and vethPairs plan.
func TestNamespacesPlan(t *testing.T) {
	cp := &spec.Job{APIVersion: spec.APIVersion, Kind: spec.KindCheckpoint, Metadata: spec.Metadata{Name: "x"},
		Checkpoint: &spec.CheckpointSpec{Target: spec.Target{Pid: 1}, ImagesDir: "/nonexistent/x",
			Namespaces: []string{"uts", "ipc", "mnt", "pid", "net"}}}
	p, err := Build(cp, time.Now())
	if err != nil {
		t.Fatalf("checkpoint with every namespace: %v", err)
	}
	var named bool
	for _, s := range p.Steps {
		named = named || strings.Contains(s.Description, "namespaces uts,ipc,mnt,pid,net")
	}
	if !named {
		t.Errorf("no step names the namespaces: %v", stepNames(p))
	}
	cp.Checkpoint.Options.Root = "/srv/root"
	var ns *NotSupportedError
	if _, err := Build(cp, time.Now()); !errors.As(err, &ns) || ns.Field != "spec.options.root" {
		t.Errorf("checkpoint with options.root: %v, want not supported (a restore option)", err)
	}
	rs := &spec.Job{APIVersion: spec.APIVersion, Kind: spec.KindRestore, Metadata: spec.Metadata{Name: "r"},
		Restore: &spec.RestoreSpec{ImagesDir: spec.ImagesSource{Path: "/nonexistent/x"}, Detached: true,
			VethPairs: []spec.VethPair{{Inside: "eth0", Outside: "veth-ctr0"}}, Options: spec.Options{Root: "/srv/root"}}}
	if _, err := Build(rs, time.Now()); err != nil {
		t.Errorf("restore with options.root and vethPairs: %v", err)
	}
}
