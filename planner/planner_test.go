package planner

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/spec"
)

var update = flag.Bool("update", false, "rewrite golden files")

var fixedNow = time.Date(2026, 11, 26, 23, 14, 55, 123456000, time.UTC)

func loadPlans(t *testing.T, name string) ([]*Plan, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := spec.Load(name, data, "/specs")
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	var plans []*Plan
	for _, j := range jobs {
		p, err := Build(j, fixedNow)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// TestGoldenPlans pins the text and JSON rendering of plans.
func TestGoldenPlans(t *testing.T) {
	for _, name := range []string{"issue-examples.yaml", "dump-cli-like.yaml", "exec-prebake.yaml", "restore-wait.yaml", "cron.yaml"} {
		t.Run(name, func(t *testing.T) {
			plans, err := loadPlans(t, name)
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			for _, p := range plans {
				text.WriteString(p.Format())
			}
			js, err := json.MarshalIndent(plans, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			base := strings.TrimSuffix(name, ".yaml")
			golden(t, filepath.Join("testdata", base+".golden"), text.String())
			golden(t, filepath.Join("testdata", base+".json.golden"), string(js)+"\n")
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run go test ./planner -update): %v", err)
	}
	if string(want) != got {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestPageServerPlan: a checkpoint with a page server says in its
// write step where the pages go.
func TestPageServerPlan(t *testing.T) {
	plans, err := loadPlans(t, "page-server.yaml")
	if err != nil {
		t.Fatalf("plan with a page server: %v", err)
	}
	var found bool
	for _, s := range plans[0].Steps {
		if s.Kind == KindWriteImages {
			found = true
			if !strings.Contains(s.Description, "page server at 10.0.0.2:27") {
				t.Errorf("write step %q does not name the page server", s.Description)
			}
		}
	}
	if !found {
		t.Error("no write-images step")
	}
}

// TestUndoOrderInvariants checks properties every checkpoint plan must
// have: lock first, unlock last, freeze before write, commit after write,
// and the finish step of a killing dump is the point of no return.
func TestUndoOrderInvariants(t *testing.T) {
	plans, err := loadPlans(t, "exec-prebake.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := plans[0]
	idx := map[string]int{}
	for i, s := range p.Steps {
		if _, dup := idx[s.Name]; dup {
			t.Errorf("step name %q used twice", s.Name)
		}
		idx[s.Name] = i
	}
	if idx["lock"] != 0 || idx["unlock"] != len(p.Steps)-1 {
		t.Errorf("lock/unlock not first/last: %v", idx)
	}
	order := []string{"resolve-target", "hook-pre-dump", "freeze", "collect", "create-temp-dir", "write-images", "commit", "finish"}
	for i := 1; i < len(order); i++ {
		if idx[order[i-1]] >= idx[order[i]] {
			t.Errorf("%s must come before %s", order[i-1], order[i])
		}
	}
	if !p.Steps[idx["finish"]].Irreversible || p.Finish != FinishKill {
		t.Errorf("killing finish must be irreversible: %+v", p.Steps[idx["finish"]])
	}
	if p.ImagesDir != "/specs/baked" {
		t.Errorf("relative imagesDir resolved to %q, want /specs/baked", p.ImagesDir)
	}
}
