package dump

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine"
)

// TestEarlySmaps: the freeze starts reading the smaps of every task once
// they are stopped (after its first pass), and Collect takes those reads
// when they are of exactly its tasks: the memory map collected is the
// task's.
func TestEarlySmaps(t *testing.T) {
	requireRoot(t)
	pid := startDetached(t, keepBatchSrc)
	d := frozen(t, engine.DumpOptions{Pid: pid, Log: testLog(t)})
	early := d.earlySmaps
	if len(early) != 1 || early[pid] == nil {
		t.Fatalf("smaps read by the freeze: %v, want one of pid %d", early, pid)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Collect(context.Background()); err != nil {
		d.Resume()
		t.Fatalf("collect: %v", err)
	}
	if d.earlySmaps != nil {
		t.Errorf("the freeze's reads still held after Collect")
	}
	if len(early[pid]) != 0 {
		t.Errorf("the freeze's smaps of pid %d were not taken by Collect", pid)
	}
	// Every mapping the task had is in the collected map.
	want := len(strings.Split(strings.TrimSpace(string(maps)), "\n"))
	if got := len(d.state.tasks[0].mm.GetVmas()); got != want {
		t.Errorf("%d VMAs collected, the task has %d:\n%s", got, want, maps)
	}
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
}

// TestReadAheadSmapsEarly: readAheadSmaps takes the early reads only when
// they are of exactly the tasks collected.
func TestReadAheadSmapsEarly(t *testing.T) {
	self := os.Getpid()
	tasks := []*task{{pid: self}}
	early := startSmaps(tasks)
	s := &dumpState{}
	s.readAheadSmaps(tasks, early)
	if reflect.ValueOf(s.smaps).Pointer() != reflect.ValueOf(early).Pointer() {
		t.Errorf("early reads of the same tasks not taken")
	}
	if _, err := s.readSmaps(self); err != nil {
		t.Fatal(err)
	}
	// A task more (found by a later pass): read again, all of them.
	more := []*task{{pid: self}, {pid: os.Getppid()}}
	early = startSmaps(tasks)
	s = &dumpState{}
	s.readAheadSmaps(more, early)
	if reflect.ValueOf(s.smaps).Pointer() == reflect.ValueOf(early).Pointer() || len(s.smaps) != 2 {
		t.Errorf("early reads of other tasks taken: %d reads", len(s.smaps))
	}
	for _, tk := range more {
		if _, err := s.readSmaps(tk.pid); err != nil {
			t.Fatal(err)
		}
	}
}
