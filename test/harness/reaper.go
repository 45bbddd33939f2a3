package harness

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper makes the test process a child subreaper and reaps, in the
// background, the zombies of children that nobody else will wait for:
// tasks restored by a crtools that has since exited are re-parented to the
// test process, and when a test kills them they would otherwise stay
// zombies and keep their PIDs from the next restore.
//
// It must not steal the exit status of a process somebody waits for, so
// it leaves alone a zombie child
//   - for which this process holds a pidfd (os/exec keeps one for every
//     process it started until Wait),
//   - that a thread of this process traces (the tracer waits for it),
//   - that was marked with Ignore,
//   - or that became a zombie less than a grace period ago (a waiter that
//     is already blocked in wait4 gets it first).
//
// WaitPid waits for a given PID through the reaper and returns its status.
type Reaper struct {
	mu      sync.Mutex
	ignored map[int]bool
	waiters map[int][]chan unix.WaitStatus
	exited  map[int]unix.WaitStatus // reaped, status not yet taken by WaitPid
	seen    map[int]time.Time       // zombie children first seen at
	kick    chan struct{}
}

// reaperGrace is how long a zombie child is left to other waiters.
const reaperGrace = 100 * time.Millisecond

var (
	reaperOnce sync.Once
	reaper     *Reaper
	reaperErr  error
)

// Subreaper sets PR_SET_CHILD_SUBREAPER on the test process (once) and
// starts the background reaper. It panics if the prctl fails, which does
// not happen on a Linux kernel of this century.
func Subreaper() *Reaper {
	reaperOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			reaperErr = fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
			return
		}
		reaper = &Reaper{
			ignored: map[int]bool{},
			waiters: map[int][]chan unix.WaitStatus{},
			exited:  map[int]unix.WaitStatus{},
			seen:    map[int]time.Time{},
			kick:    make(chan struct{}, 1),
		}
		go reaper.loop()
	})
	if reaperErr != nil {
		panic(reaperErr)
	}
	return reaper
}

func (r *Reaper) loop() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD)
	tick := time.NewTicker(reaperGrace)
	defer tick.Stop()
	for {
		select {
		case <-sig:
		case <-tick.C:
		case <-r.kick:
		}
		r.scan()
	}
}

// Ignore tells the reaper never to reap pid (somebody else waits for it).
func (r *Reaper) Ignore(pid int) {
	r.mu.Lock()
	r.ignored[pid] = true
	r.mu.Unlock()
}

// Unignore undoes Ignore.
func (r *Reaper) Unignore(pid int) {
	r.mu.Lock()
	delete(r.ignored, pid)
	r.mu.Unlock()
}

// Forget drops a status of pid that was reaped but not taken yet, so that
// a later WaitPid only sees a later exit (PIDs come back after a restore).
func (r *Reaper) Forget(pid int) {
	r.mu.Lock()
	delete(r.exited, pid)
	r.mu.Unlock()
}

// ErrWaitTimeout is returned by WaitPid when the process did not exit (or
// was not re-parented to the test process) in time.
var ErrWaitTimeout = errors.New("timed out")

// WaitPid waits until pid, a child of the test process (or one that will
// be re-parented to it), exits, reaps it and returns its wait status. A
// waiter makes the reaper take pid at once, even if a pidfd is held for it.
func (r *Reaper) WaitPid(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	if st, ok := r.exited[pid]; ok {
		delete(r.exited, pid)
		r.mu.Unlock()
		return st, nil
	}
	r.waiters[pid] = append(r.waiters[pid], ch)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case st := <-ch:
		return st, nil
	case <-timer.C:
		r.mu.Lock()
		ws := r.waiters[pid]
		for i, c := range ws {
			if c == ch {
				r.waiters[pid] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(r.waiters[pid]) == 0 {
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
		// The status may have arrived just now.
		select {
		case st := <-ch:
			return st, nil
		default:
		}
		return 0, fmt.Errorf("wait for pid %d: %w after %v", pid, ErrWaitTimeout, timeout)
	}
}

// scan looks for zombie children and reaps those nobody else waits for.
func (r *Reaper) scan() {
	children := childPids()
	var zombies []int
	for _, pid := range children {
		if st, err := procState(pid); err == nil && st == 'Z' {
			zombies = append(zombies, pid)
		}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	live := map[int]bool{}
	var candidates []int
	for _, pid := range zombies {
		live[pid] = true
		if len(r.waiters[pid]) > 0 {
			candidates = append(candidates, pid)
			continue
		}
		if r.ignored[pid] {
			continue
		}
		first, ok := r.seen[pid]
		if !ok {
			r.seen[pid] = now
			continue
		}
		if now.Sub(first) >= reaperGrace {
			candidates = append(candidates, pid)
		}
	}
	for pid := range r.seen {
		if !live[pid] {
			delete(r.seen, pid)
		}
	}
	if len(candidates) == 0 {
		return
	}
	held := pidfdPids()
	for _, pid := range candidates {
		wanted := len(r.waiters[pid]) > 0
		if !wanted && (held[pid] || tracedByUs(pid)) {
			continue
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil || got != pid {
			continue
		}
		delete(r.seen, pid)
		if wanted {
			ch := r.waiters[pid][0]
			r.waiters[pid] = r.waiters[pid][1:]
			if len(r.waiters[pid]) == 0 {
				delete(r.waiters, pid)
			}
			ch <- ws
			continue
		}
		r.exited[pid] = ws
	}
}

// childPids lists the children of every thread of this process.
func childPids() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// procState returns the state letter of /proc/PID/stat.
func procState(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The comm field may hold spaces and parentheses: the state follows
	// the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("parse /proc/%d/stat: no state", pid)
	}
	return b[i+2], nil
}

// tracerPid returns TracerPid of /proc/PID/status (0 if untraced or gone).
func tracerPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// tracedByUs reports whether a thread of this process traces pid.
// TracerPid names the tracing thread, which for a Go tracer locked to an
// OS thread is not the process ID.
func tracedByUs(pid int) bool {
	tp := tracerPid(pid)
	if tp == 0 {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tp))
	return err == nil
}

// pidfdPids returns the PIDs this process holds a pidfd for.
func pidfdPids() map[int]bool {
	held := map[int]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return held
	}
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.Contains(link, "pidfd") {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					held[n] = true
				}
			}
		}
	}
	return held
}

// KillTree sends SIGKILL to pid and every descendant of it that can be
// found through /proc (children that changed session or process group
// included). It returns the PIDs it signalled.
func KillTree(pid int) []int {
	seen := map[int]bool{}
	var order []int
	// Stop first so that nobody forks while we walk the tree.
	var walk func(p int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		order = append(order, p)
		_ = unix.Kill(p, unix.SIGSTOP)
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, s := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(s); err == nil {
					walk(n)
				}
			}
		}
	}
	walk(pid)
	for _, p := range order {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	return order
}
