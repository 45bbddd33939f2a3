package planner

import (
	"errors"
	"testing"
	"time"

	"github.com/crtools/crtools/spec"
)

func stepNames(p *Plan) []string {
	var n []string
	for _, s := range p.Steps {
		n = append(n, s.Name)
	}
	return n
}

func indexOf(names []string, n string) int {
	for i, x := range names {
		if x == n {
			return i
		}
	}
	return -1
}

// With tcpEstablished, a network-lock hook runs between freeze and
// collect, and network-unlock after a restore's resume (or after a dump
// that leaves the tree running); without it the hooks stay refused.
func TestNetworkLockHooks(t *testing.T) {
	hook := &spec.Hook{Run: []string{"true"}}
	cp := func(tcp, leave bool) *spec.Job {
		return &spec.Job{APIVersion: spec.APIVersion, Kind: spec.KindCheckpoint, Metadata: spec.Metadata{Name: "x"},
			Checkpoint: &spec.CheckpointSpec{Target: spec.Target{Pid: 1}, ImagesDir: "/nonexistent/x", LeaveRunning: leave,
				Options: spec.Options{TCPEstablished: tcp}, Hooks: spec.Hooks{NetworkLock: hook, NetworkUnlock: hook}}}
	}
	p, err := Build(cp(true, false), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := stepNames(p)
	if i := indexOf(n, "hook-network-lock"); i < 0 || i != indexOf(n, "freeze")+1 || indexOf(n, "collect") != i+1 {
		t.Errorf("checkpoint steps %v: network-lock not between freeze and collect", n)
	}
	if indexOf(n, "hook-network-unlock") >= 0 {
		t.Errorf("checkpoint that kills the tree unlocks: %v", n)
	}
	if p, err = Build(cp(true, true), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n = stepNames(p); indexOf(n, "hook-network-unlock") != indexOf(n, "finish")+1 {
		t.Errorf("leave-running checkpoint steps %v: network-unlock not after finish", n)
	}
	var ns *NotSupportedError
	if _, err := Build(cp(false, false), time.Now()); !errors.As(err, &ns) {
		t.Errorf("network-lock hook without tcpEstablished: %v", err)
	}

	rs := func(tcp bool) *spec.Job {
		return &spec.Job{APIVersion: spec.APIVersion, Kind: spec.KindRestore, Metadata: spec.Metadata{Name: "x"},
			Restore: &spec.RestoreSpec{ImagesDir: spec.ImagesSource{Path: "/nonexistent/x"}, Detached: true,
				Options: spec.Options{TCPEstablished: tcp}, Hooks: spec.Hooks{NetworkUnlock: hook}}}
	}
	if p, err = Build(rs(true), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n = stepNames(p); indexOf(n, "hook-network-unlock") != indexOf(n, "resume")+1 {
		t.Errorf("restore steps %v: network-unlock not after resume", n)
	}
	if _, err := Build(rs(false), time.Now()); !errors.As(err, &ns) {
		t.Errorf("network-unlock hook without tcpEstablished: %v", err)
	}
}
