package executor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/spec"
)

// DefaultReadyTimeout bounds the wait for a launched program.
const DefaultReadyTimeout = 30 * time.Second

// launch starts an exec target in a new session (so that it has no
// controlling terminal and needs no --shell-job), with stdin from
// /dev/null and stdout/stderr appended to the files the spec names.
//
// crtools must not wait(2) for the child while the engine traces it: a
// wait from any thread of the tracer's process can consume ptrace stops.
// So nothing waits for it until the dump is over (see run.cleanup).
func (r *run) launch(ctx context.Context, e *spec.ExecTarget, log zerolog.Logger) error {
	open := func(p string) (*os.File, error) {
		if p == "" {
			return os.OpenFile(os.DevNull, os.O_RDWR, 0)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer stdin.Close()
	stdout, err := open(e.Stdout)
	if err != nil {
		return fmt.Errorf("open stdout file: %w", err)
	}
	defer stdout.Close()
	stderr := stdout
	if e.Stderr != e.Stdout {
		stderr, err = open(e.Stderr)
		if err != nil {
			return fmt.Errorf("open stderr file: %w", err)
		}
		defer stderr.Close()
	}
	// A ready file left by an earlier run must not count as ready now.
	if e.Ready.File != "" {
		if err := os.Remove(e.Ready.File); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove stale ready file: %w", err)
		}
	}
	// The program gets stdin, stdout and stderr only: descriptors that
	// crtools inherited without close-on-exec (from a shell, a CI runner)
	// would become part of its state, and of its checkpoint.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	cmd := exec.Command(e.Command[0], e.Command[1:]...)
	cmd.Dir = e.Dir
	if cmd.Dir == "" {
		cmd.Dir = r.job.BaseDir
	}
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+e.Env[k])
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("launch %s: %w", e.Command[0], err)
	}
	r.launched = cmd
	r.pid = cmd.Process.Pid
	log.Info().Int("pid", r.pid).Str("command", strings.Join(e.Command, " ")).Msg("launched")
	if err := waitReady(ctx, r.pid, e.Ready, log); err != nil {
		// A failed step is not undone by the rollback: clean up here.
		cmd.Process.Kill()
		cmd.Wait()
		r.launched = nil
		return err
	}
	return nil
}

// waitReady polls until every ready condition holds, the program dies or
// the timeout passes.
func waitReady(ctx context.Context, pid int, rd spec.Ready, log zerolog.Logger) error {
	timeout := rd.Timeout.D()
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if !alive(pid) {
			return fmt.Errorf("launched program %d exited before it was ready", pid)
		}
		var waiting []string
		if time.Since(start) < rd.Delay.D() {
			waiting = append(waiting, "delay")
		}
		if rd.File != "" {
			if _, err := os.Stat(rd.File); err != nil {
				waiting = append(waiting, "file "+rd.File)
			}
		}
		if rd.TCPPort != 0 {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(rd.TCPPort)), 200*time.Millisecond)
			if err != nil {
				waiting = append(waiting, fmt.Sprintf("tcp port %d", rd.TCPPort))
			} else {
				c.Close()
			}
		}
		if len(waiting) == 0 {
			log.Info().Dur("after", time.Since(start)).Msg("launched program is ready")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("launched program %d not ready after %s (waiting for %s)", pid, timeout, strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// alive reports whether pid exists and is not a zombie, without waiting
// for it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}
