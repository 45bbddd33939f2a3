package executor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockedError: another run of the same recipe holds its lock.
type LockedError struct {
	Job    string
	Path   string
	Holder int // PID written by the holder, 0 if unknown
}

func (e *LockedError) Error() string {
	holder := ""
	if e.Holder > 0 {
		holder = fmt.Sprintf(" (pid %d)", e.Holder)
	}
	return fmt.Sprintf("recipe %q is locked by another run%s: %s; this run changes nothing", e.Job, holder, e.Path)
}

// recipeLock is an flock on LockDir/NAME.lock. The kernel drops it when
// the process dies, so a crashed run never leaves a stale lock.
type recipeLock struct {
	f    *os.File
	path string
}

func lockPath(dir, job string) string {
	return filepath.Join(dir, job+".lock")
}

func acquireLock(dir, job string) (*recipeLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory %s: %w", dir, err)
	}
	p := lockPath(dir, job)
	for {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open lock %s: %w", p, err)
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err != nil {
			defer f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				b, _ := os.ReadFile(p)
				holder, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				return nil, &LockedError{Job: job, Path: p, Holder: holder}
			}
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		// release removes the file while it holds the lock: a file
		// locked after that is no longer the recipe's lock, and the
		// run opens the path again.
		if !samePath(f, p) {
			f.Close()
			continue
		}
		// Say who holds it, for the other run's message.
		if err := f.Truncate(0); err == nil {
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return &recipeLock{f: f, path: p}, nil
	}
}

// samePath tells whether f is the file at path p.
func samePath(f *os.File, p string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(p, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// release removes the lock file, then drops the flock: lock files of
// recipes do not pile up in the lock directory (a command-line dump's
// recipe is named after its PID, so every dump made one more), and a run
// that opened the file before the removal sees it is gone (acquireLock).
// A run killed while it holds the lock leaves its file; the next run of
// the recipe takes it and removes it.
func (l *recipeLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	os.Remove(l.path)
	return f.Close() // closing drops the flock
}
