package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultHookTimeout applies to hooks with no timeout of their own.
const DefaultHookTimeout = 60 * time.Second

// hookEnv is the environment of every hook and action script.
type hookEnv struct {
	Job       string
	ImagesDir string
	Pid       int
}

func (e hookEnv) vars(action string, undo bool) []string {
	v := []string{
		// CRIU's documented name has no S; crtools' own has one. Both.
		"CRTOOL_SCRIPT_ACTION=" + action,
		"CRTOOLS_SCRIPT_ACTION=" + action,
		"CRTOOLS_JOB_NAME=" + e.Job,
		"CRTOOLS_IMAGES_DIR=" + e.ImagesDir,
		"CRTOOLS_IMAGE_DIR=" + e.ImagesDir, // CRIU's spelling
	}
	if e.Pid > 0 {
		v = append(v, "CRTOOLS_INIT_PID="+strconv.Itoa(e.Pid))
	}
	if undo {
		v = append(v, "CRTOOLS_UNDO=1")
	}
	return v
}

// runCommand runs one hook command with a timeout. It runs in its own
// process group so that a timeout kills whatever it started too.
func runCommand(ctx context.Context, argv []string, env []string, dir string, timeout time.Duration, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%s: timed out after %s (killed)", argv[0], timeout)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %s", argv[0], ee.ProcessState.String())
		}
		return fmt.Errorf("run %s: %w", argv[0], err)
	}
	return nil
}
