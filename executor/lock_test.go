package executor

import (
	"errors"
	"os"
	"testing"
)

// A released lock leaves no file behind (a command-line dump's recipe is
// named after its PID: every dump left one more file in /run/crtools),
// and a run that holds the lock still excludes a second one.
func TestLockFileRemovedOnRelease(t *testing.T) {
	dir := t.TempDir()
	l, err := acquireLock(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	var le *LockedError
	if _, err := acquireLock(dir, "r"); !errors.As(err, &le) || le.Holder != os.Getpid() {
		t.Errorf("second acquire while held: %v, want LockedError naming pid %d", err, os.Getpid())
	}
	// A file opened before the release, as by a run that raced with it.
	old, err := os.Open(lockPath(dir, "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lockPath(dir, "r")); !os.IsNotExist(err) {
		t.Errorf("lock file after release: %v, want it removed", err)
	}
	if samePath(old, lockPath(dir, "r")) {
		t.Error("samePath: a removed file is still the lock")
	}
	l2, err := acquireLock(dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	if !samePath(l2.f, lockPath(dir, "r")) {
		t.Error("the lock taken is not the file at the lock path")
	}
	l2.release()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("lock directory holds %d files after release, want 0", len(ents))
	}
}
