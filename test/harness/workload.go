package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Workload is a running workload started by StartWorkload.
type Workload struct {
	t    testing.TB
	Pid  int    // PID of the workload (the same after a restore)
	Dir  string // its temporary directory (and working directory)
	Bin  string
	Args []string

	ReadyPath  string // CRT_READY
	ResultPath string // CRT_RESULT
	StartsPath string // CRT_STARTS
	StdoutPath string
	StderrPath string

	cmd      *exec.Cmd
	done     chan struct{} // closed when the process started by us exited
	waitErr  error
	mu       sync.Mutex
	token    string
	progress uint64
	verified bool
}

// Config says how to start a workload. Bin is required.
type Config struct {
	Bin  string
	Args []string
	// Env is added to the test's environment (and the CRT_* variables).
	Env []string
}

// StartWorkload starts bin with args in a new session (setsid), its
// working directory and stdout/stderr files in a temporary directory, and
// the CRT_* protocol variables set. The workload and everything it forked
// is killed when the test ends.
func StartWorkload(t testing.TB, bin string, args ...string) *Workload {
	t.Helper()
	return Start(t, Config{Bin: bin, Args: args})
}

// Start is StartWorkload with a Config.
func Start(t testing.TB, c Config) *Workload {
	t.Helper()
	dir := t.TempDir()
	w := &Workload{
		t:          t,
		Dir:        dir,
		Bin:        c.Bin,
		Args:       c.Args,
		ReadyPath:  filepath.Join(dir, "ready"),
		ResultPath: filepath.Join(dir, "result"),
		StartsPath: filepath.Join(dir, "starts"),
		StdoutPath: filepath.Join(dir, "stdout"),
		StderrPath: filepath.Join(dir, "stderr"),
		done:       make(chan struct{}),
	}
	stdout, err := os.Create(w.StdoutPath)
	if err != nil {
		t.Fatalf("create stdout file: %v", err)
	}
	defer stdout.Close()
	stderr, err := os.Create(w.StderrPath)
	if err != nil {
		t.Fatalf("create stderr file: %v", err)
	}
	defer stderr.Close()
	cmd := exec.Command(c.Bin, c.Args...)
	cmd.Dir = dir
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Env = append(cmd.Env,
		"CRT_READY="+w.ReadyPath,
		"CRT_RESULT="+w.ResultPath,
		"CRT_STARTS="+w.StartsPath,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start workload %s: %v", c.Bin, err)
	}
	w.cmd = cmd
	w.Pid = cmd.Process.Pid
	// Reap our own child at once, so that a dump that kills it does not
	// leave a zombie holding the PID the restore needs.
	go func() {
		w.waitErr = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		w.Kill()
		if err := waitGone(w.Pid, 5*time.Second); err != nil {
			t.Logf("workload %d: %v", w.Pid, err)
		}
	})
	return w
}

// Exited is closed when the process started by StartWorkload has exited
// (killed by a dump, say). A restored process with the same PID is not our
// child: use Reaper.WaitPid for it.
func (w *Workload) Exited() <-chan struct{} { return w.done }

// ExitErr is the error of exec.Cmd.Wait of the original process; valid
// once Exited is closed.
func (w *Workload) ExitErr() error { return w.waitErr }

// Kill kills the workload's whole tree (whatever process now has its PID:
// the original or a restored one) and its process group. A process that
// holds the PID but is not this workload (its environment lacks this
// workload's CRT_RESULT) is left alone.
func (w *Workload) Kill() {
	if !w.owns(w.Pid) {
		return
	}
	KillTree(w.Pid)
	_ = unix.Kill(-w.Pid, unix.SIGKILL)
}

// owns reports whether pid runs this workload (or a restored copy of it):
// its environment names this workload's result file.
func (w *Workload) owns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil || len(b) == 0 {
		// Gone, or a zombie: nothing to kill. Or a process whose main
		// thread exited (its leader a zombie) while others run: ask
		// those.
		b = nil
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range tids {
			if tb, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/environ", pid, e.Name())); err == nil && len(tb) > 0 {
				b = tb
				break
			}
		}
		if b == nil {
			return false
		}
	}
	want := "CRT_RESULT=" + w.ResultPath
	for _, kv := range strings.Split(string(b), "\x00") {
		if kv == want {
			return true
		}
	}
	return false
}

// waitGone waits until pid no longer exists (zombies count as gone only
// once reaped).
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			st, _ := procState(pid)
			return fmt.Errorf("pid %d still exists after %v (state %q)", pid, timeout, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Output returns what the workload wrote to stdout and stderr so far, for
// error messages.
func (w *Workload) Output() string {
	out, _ := os.ReadFile(w.StdoutPath)
	errb, _ := os.ReadFile(w.StderrPath)
	var b strings.Builder
	if len(out) > 0 {
		fmt.Fprintf(&b, "stdout:\n%s", tail(out))
	}
	if len(errb) > 0 {
		fmt.Fprintf(&b, "stderr:\n%s", tail(errb))
	}
	return b.String()
}

func tail(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// WaitReady waits until the workload has written its ready marker and
// checks that it names the workload's PID.
func (w *Workload) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(w.ReadyPath)
		if err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				return fmt.Errorf("workload %s: bad ready marker %q", filepath.Base(w.Bin), b)
			}
			if pid != w.Pid {
				return fmt.Errorf("workload %s: ready marker names pid %d, started %d", filepath.Base(w.Bin), pid, w.Pid)
			}
			return nil
		}
		select {
		case <-w.done:
			return fmt.Errorf("workload %s exited before it was ready: %v\n%s", filepath.Base(w.Bin), w.waitErr, w.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workload %s not ready after %v\n%s", filepath.Base(w.Bin), timeout, w.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MustReady is WaitReady that fails the test.
func (w *Workload) MustReady(timeout time.Duration) {
	w.t.Helper()
	if err := w.WaitReady(timeout); err != nil {
		w.t.Fatal(err)
	}
}

// Result is a parsed result file.
type Result struct {
	Pass     bool
	Reason   string // for FAIL
	Token    string
	Progress uint64
	Raw      string
}

// ParseResult parses "PASS token=T progress=N" or "FAIL reason".
func ParseResult(s string) (Result, error) {
	r := Result{Raw: s}
	s = strings.TrimRight(s, "\n")
	switch {
	case strings.HasPrefix(s, "FAIL"):
		r.Reason = strings.TrimSpace(strings.TrimPrefix(s, "FAIL"))
		if r.Reason == "" {
			r.Reason = "(no reason given)"
		}
		return r, nil
	case strings.HasPrefix(s, "PASS"):
		r.Pass = true
		for _, f := range strings.Fields(s)[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "token":
				r.Token = v
			case "progress":
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return r, fmt.Errorf("parse result %q: progress: %w", s, err)
				}
				r.Progress = n
			}
		}
		if r.Token == "" {
			return r, fmt.Errorf("parse result %q: no token", s)
		}
		return r, nil
	}
	return r, fmt.Errorf("parse result %q: want PASS or FAIL", s)
}

// Verify asks the workload to check itself (SIGUSR1) and waits for its
// verdict. It returns an error if the workload reports FAIL, does not
// answer in time, was restarted (more than one start recorded, or a token
// other than at the previous Verify), or did not progress since the
// previous Verify.
func (w *Workload) Verify(timeout time.Duration) error {
	r, err := w.signalAndRead(unix.SIGUSR1, timeout)
	if err != nil {
		return err
	}
	return w.check(r)
}

// MustVerify is Verify that fails the test.
func (w *Workload) MustVerify(timeout time.Duration) {
	w.t.Helper()
	if err := w.Verify(timeout); err != nil {
		w.t.Fatal(err)
	}
}

// VerifyAndExit sends SIGUSR2: the workload verifies, writes its result
// and exits with 0 on PASS, 1 on FAIL. It returns the checked result;
// waiting for the exit is the caller's business (it depends on whose child
// the workload is by then).
func (w *Workload) VerifyAndExit(timeout time.Duration) error {
	r, err := w.signalAndRead(unix.SIGUSR2, timeout)
	if err != nil {
		return err
	}
	return w.check(r)
}

func (w *Workload) signalAndRead(sig unix.Signal, timeout time.Duration) (Result, error) {
	name := filepath.Base(w.Bin)
	if err := os.Remove(w.ResultPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Result{}, fmt.Errorf("remove old result of %s: %w", name, err)
	}
	// PIDs come back quickly (pid_max may be 32768): never signal a
	// process that is not this workload.
	if !w.owns(w.Pid) {
		st, _ := procState(w.Pid)
		return Result{}, fmt.Errorf("workload %s: pid %d is not running it (state %q): it exited or was not restored\n%s",
			name, w.Pid, st, w.Output())
	}
	if err := unix.Kill(w.Pid, sig); err != nil {
		return Result{}, fmt.Errorf("signal workload %s (pid %d): %w", name, w.Pid, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(w.ResultPath)
		if err == nil && len(b) > 0 {
			r, err := ParseResult(string(b))
			if err != nil {
				return r, fmt.Errorf("workload %s: %w", name, err)
			}
			return r, nil
		}
		if time.Now().After(deadline) {
			st, _ := procState(w.Pid)
			return Result{}, fmt.Errorf("workload %s (pid %d, state %q) gave no result %v after %v\n%s%s",
				name, w.Pid, st, sig, timeout, threadsReport(w.Pid), w.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *Workload) check(r Result) error {
	name := filepath.Base(w.Bin)
	if !r.Pass {
		return fmt.Errorf("workload %s (pid %d) reports FAIL: %s", name, w.Pid, r.Reason)
	}
	starts, err := w.Starts()
	if err != nil {
		return err
	}
	if starts != 1 {
		return fmt.Errorf("workload %s (pid %d) was started %d times, want 1: it was re-run, not restored", name, w.Pid, starts)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verified {
		if r.Token != w.token {
			return fmt.Errorf("workload %s (pid %d): token %s, was %s at the previous verify: not the same run", name, w.Pid, r.Token, w.token)
		}
		if r.Progress <= w.progress {
			return fmt.Errorf("workload %s (pid %d): progress %d, was %d at the previous verify: it did not carry on", name, w.Pid, r.Progress, w.progress)
		}
	}
	w.verified = true
	w.token = r.Token
	w.progress = r.Progress
	return nil
}

// Starts returns how many times the workload program started (lines in
// the CRT_STARTS file).
func (w *Workload) Starts() (int, error) {
	b, err := os.ReadFile(w.StartsPath)
	if err != nil {
		return 0, fmt.Errorf("read start log of %s: %w", filepath.Base(w.Bin), err)
	}
	return strings.Count(string(b), "\n"), nil
}

// Progress returns the progress counter reported by the last Verify.
func (w *Workload) Progress() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.progress
}

// threadsReport describes every thread of pid (state, syscall, pending
// and blocked signals) for a workload that did not answer: it tells a
// signal that went nowhere from a thread that never ran.
func threadsReport(pid int) string {
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, e := range tids {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, e.Name())
		st, _ := procState(pid)
		if s, err := os.ReadFile(dir + "/stat"); err == nil {
			if i := strings.LastIndexByte(string(s), ')'); i >= 0 && i+2 < len(s) {
				st = s[i+2]
			}
		}
		sc, _ := os.ReadFile(dir + "/syscall")
		fmt.Fprintf(&b, "thread %s: state %c syscall %s", e.Name(), st, strings.Fields(string(sc) + " ?")[0])
		status, _ := os.ReadFile(dir + "/status")
		for _, l := range strings.Split(string(status), "\n") {
			for _, k := range []string{"SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:"} {
				if strings.HasPrefix(l, k) {
					fmt.Fprintf(&b, " %s", strings.Join(strings.Fields(l), " "))
				}
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
