package ptrace

import (
	"fmt"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Tracer owns one goroutine locked to its OS thread. Every ptrace call and
// every wait4 on a traced task of a tree goes through it (see the package
// documentation for why).
type Tracer struct {
	reqs      chan func()
	done      chan struct{}
	exited    chan struct{}
	closeOnce sync.Once
	tid       int
}

// NewTracer starts the tracer goroutine and returns once its thread is ready.
func NewTracer() *Tracer {
	t := &Tracer{
		reqs:   make(chan func()),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	ready := make(chan struct{})
	go t.loop(ready)
	<-ready
	return t
}

func (t *Tracer) loop(ready chan<- struct{}) {
	// ptrace relationships belong to this OS thread, so the goroutine must
	// never run anywhere else. It never unlocks: when loop returns, the Go
	// runtime ends the thread, and the kernel detaches (or kills, with
	// PTRACE_O_EXITKILL) the tasks it still traced, instead of leaving them
	// bound to a thread that serves other goroutines.
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread, which the runtime never ends (it parks it
		// instead): tracees would stay bound to it after Close (a
		// killed tree would stay zombies of it, engine/dump's Finish).
		// Start over in a goroutine that, while this one holds the
		// main thread, runs on another, and let the main thread go
		// once it has its own.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			t.loop(ready)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	defer close(t.exited)
	t.tid = unix.Gettid()
	close(ready)
	for {
		select {
		case f := <-t.reqs:
			f()
		case <-t.done:
			return
		}
	}
}

// Tid is the thread id of the tracer thread: the tracer that
// /proc/PID/status shows as TracerPid of its tasks.
func (t *Tracer) Tid() int { return t.tid }

// Do runs f on the tracer thread and waits for it. A panic in f is returned
// as an error (with its stack) so the tracer thread survives it. Called from
// inside f (on the tracer thread already), Do runs its function at once.
func (t *Tracer) Do(f func() error) error {
	// The tracer goroutine is locked to its thread and no other goroutine
	// runs there, so the thread id tells whether we are it.
	if unix.Gettid() == t.tid {
		return f()
	}
	var err error
	finished := make(chan struct{})
	call := func() {
		defer close(finished)
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic on tracer thread: %v\n%s", r, debug.Stack())
			}
		}()
		err = f()
	}
	select {
	case t.reqs <- call:
	case <-t.done:
		return ErrTracerClosed
	}
	<-finished
	return err
}

// Close ends the tracer goroutine; its thread exits. It waits until the
// goroutine has returned. Close is idempotent.
func (t *Tracer) Close() {
	t.closeOnce.Do(func() { close(t.done) })
	<-t.exited
}

// StartTraced starts cmd from the tracer thread with SysProcAttr.Ptrace set,
// so the new process is traced by this Tracer, and waits for the SIGTRAP stop
// at its exec. It returns the pid. The caller must not use cmd.Wait while the
// process is traced (wait4 belongs to the tracer thread); use Wait.
func (t *Tracer) StartTraced(cmd *exec.Cmd) (int, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	pid := 0
	err := t.Do(func() error {
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start traced %s: %w", cmd.Path, err)
		}
		pid = cmd.Process.Pid
		st, err := WaitStopped(pid)
		if err != nil {
			return fmt.Errorf("wait for exec stop of %s (pid %d): %w", cmd.Path, pid, err)
		}
		if st.Sig != int(unix.SIGTRAP) {
			_ = unix.Kill(pid, unix.SIGKILL)
			return fmt.Errorf("wait for exec stop of %s (pid %d): stopped by signal %d, want SIGTRAP", cmd.Path, pid, st.Sig)
		}
		return nil
	})
	return pid, err
}
