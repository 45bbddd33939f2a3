// Package test holds crtools' end-to-end tests. The workloads they run
// are in test/workloads (C with crt.h, the Go program gowork and the
// Python program pywork.py). The
// test in this file runs each of them without any dump or restore, so
// that a failure in an engine test is known not to be the workload's own.
package test

import (
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// runPlain starts a workload, waits for it to be ready, verifies it twice
// (the second time also proves progress), then has it verify and exit.
func runPlain(t *testing.T, bin string, args ...string) *harness.Workload {
	t.Helper()
	w := harness.StartWorkload(t, bin, args...)
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	time.Sleep(50 * time.Millisecond)
	w.MustVerify(10 * time.Second)
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Exited():
		if err := w.ExitErr(); err != nil {
			t.Fatalf("workload exit after PASS: %v\n%s", err, w.Output())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("workload did not exit after SIGUSR2\n%s", w.Output())
	}
	return w
}

func TestWorkloadsPlain(t *testing.T) {
	harness.Subreaper()
	cases := []struct {
		src  string
		args []string
	}{
		{"simple.c", nil},
		{"memory.c", nil},
		{"signals.c", nil},
		{"sleepers.c", []string{"nanosleep"}},
		{"sleepers.c", []string{"pause"}},
		{"sleepers.c", []string{"sigsuspend"}},
		{"sleepers.c", []string{"select"}},
		{"files.c", nil},
		{"process.c", nil},
		{"threads.c", []string{"8"}},
		{"threads.c", []string{"64"}},
		{"tree.c", nil},
		{"forkstorm.c", nil},
		{"leaderexit.c", []string{"self"}},
		{"leaderexit.c", []string{"child"}},
		{"seccomp.c", nil},
		{"sysvshm.c", nil},
		{"sysvns.c", nil},
	}
	for _, c := range cases {
		name := c.src
		if len(c.args) > 0 {
			name += "/" + strings.Join(c.args, "_")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := harness.BuildC(t, c.src)
			runPlain(t, bin, c.args...)
		})
	}
	t.Run("pywork.py", func(t *testing.T) {
		t.Parallel()
		runPlain(t, harness.Python3(t), harness.WorkloadFile(t, "pywork.py"))
	})
	t.Run("gowork", func(t *testing.T) {
		t.Parallel()
		bin := harness.BuildGo(t, "gowork")
		runPlain(t, bin)
	})
}
