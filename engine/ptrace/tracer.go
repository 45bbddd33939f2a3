package ptrace

import (
	"fmt"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
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
	ready     chan struct{}
	closeOnce sync.Once
	// tid is 0 until the tracer thread sets it, before it runs any
	// request.
	tid atomic.Int64
}

// NewTracer starts the tracer goroutine. It does not wait for it: the first
// request waits instead (a goroutine locked to its thread that readies
// another makes the runtime hand its P to another thread, sometimes a new
// one started through the runtime's template thread; a wait here cost
// 0.13-0.64 ms of a threads50 dump or restore in execution traces).
func NewTracer() *Tracer {
	t := &Tracer{
		// One slot: the sender of a request never waits for the
		// tracer to take it, it waits once, for the result (Do).
		reqs:   make(chan func(), 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		ready:  make(chan struct{}),
	}
	go t.loop(t.ready)
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
	t.tid.Store(int64(unix.Gettid()))
	close(ready)
	for {
		select {
		case f := <-t.reqs:
			// select picks at random among ready cases: no request
			// runs once Close or Release was called (its Do returns
			// ErrTracerClosed).
			select {
			case <-t.done:
				return
			default:
			}
			f()
		case <-t.done:
			return
		}
	}
}

// Tid is the thread id of the tracer thread: the tracer that
// /proc/PID/status shows as TracerPid of its tasks.
// It waits until the thread is ready.
func (t *Tracer) Tid() int {
	<-t.ready
	return int(t.tid.Load())
}

// Do runs f on the tracer thread and waits for it. A panic in f is returned
// as an error (with its stack) so the tracer thread survives it. Called from
// inside f (on the tracer thread already), Do runs its function at once.
func (t *Tracer) Do(f func() error) error {
	// The tracer goroutine is locked to its thread and no other goroutine
	// runs there, so the thread id tells whether we are it.
	if int64(unix.Gettid()) == t.tid.Load() {
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
	// The request may sit in reqs' slot when the loop returns (Close):
	// then it never runs.
	select {
	case <-finished:
		return err
	case <-t.exited:
		select {
		case <-finished:
			return err
		default:
			return ErrTracerClosed
		}
	}
}

// Close ends the tracer goroutine; its thread exits. It waits until the
// goroutine has returned. Close is idempotent.
func (t *Tracer) Close() {
	t.Release()
	<-t.exited
}

// Release ends the tracer goroutine like Close but does not wait for it:
// for a caller that needs nothing more of the thread (its tracees are
// detached, or killed and left to the kernel). Waiting costs a thread
// switch at best and, as a goroutine locked to its thread exits with the
// thread, the runtime often starts a new thread through its template
// thread to run the waiter: 0.25-0.9 ms of a threads50 dump in execution
// traces. Do and Close after Release behave as after Close.
func (t *Tracer) Release() {
	t.closeOnce.Do(func() { close(t.done) })
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
