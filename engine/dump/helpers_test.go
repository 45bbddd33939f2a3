package dump

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine"
)

// A traced task that is our own child would have its ptrace stops
// reported to any thread of this process that waits for it (os/exec's
// Wait included), so the targets of these tests are started detached:
// a shell starts them in the background and exits, and they are adopted
// by init. Their pid comes back through a file.

// startDetached compiles src (C) and starts it outside our process tree.
// The program must write "ready\n" to the file named by $READY once set up.
// The returned pid is killed when the test ends.
func startDetached(t testing.TB, src string, args ...string) int {
	t.Helper()
	pid, _ := startDetachedReady(t, src, args...)
	return pid
}

// startDetachedReady is startDetached, and also returns the first line the
// program wrote to $READY (which starts with "ready").
func startDetachedReady(t testing.TB, src string, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	bin := buildC(t, dir, src)
	ready := filepath.Join(dir, "ready")
	pidFile := filepath.Join(dir, "pid")
	script := `READY="$1" "$2" "${@:4}" </dev/null >/dev/null 2>&1 & echo $! > "$3"`
	cmd := exec.Command("bash", append([]string{"-c", script, "bash", ready, bin, pidFile}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start %s: %v\n%s", bin, err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(ready); bytes.HasPrefix(b, []byte("ready")) {
			line, _, _ := strings.Cut(string(b), "\n")
			return pid, line
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) did not get ready", bin, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func buildC(t testing.TB, dir, src string) string {
	t.Helper()
	c := filepath.Join(dir, "prog.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, c, "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// frozen returns a dumper of opts whose tree is frozen; the test fails if
// the freeze does. The dumper is closed when the test ends.
func frozen(t testing.TB, opts engine.DumpOptions) *Dumper {
	t.Helper()
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Freeze(context.Background()); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	return d
}

// collected returns a dumper of opts whose tree is frozen and collected;
// the test fails, with the tree resumed, if either phase fails. The dumper
// is closed when the test ends.
func collected(t testing.TB, opts engine.DumpOptions) *Dumper {
	t.Helper()
	d := frozen(t, opts)
	if err := d.Collect(context.Background()); err != nil {
		d.Resume()
		t.Fatalf("collect: %v", err)
	}
	return d
}

// dumpPid runs every phase of a dump of pid into dir and finishes with mode.
func dumpPid(t testing.TB, pid int, dir string, mode engine.FinishMode) (Timings, error) {
	d, err := New(engine.DumpOptions{Pid: pid, Log: testLog(t)})
	if err != nil {
		return Timings{}, err
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.Freeze(ctx); err != nil {
		return Timings{}, fmt.Errorf("freeze: %w", err)
	}
	if err := d.Collect(ctx); err != nil {
		d.Resume()
		return Timings{}, fmt.Errorf("collect: %w", err)
	}
	if err := d.WriteImages(ctx, dir); err != nil {
		d.Resume()
		return Timings{}, fmt.Errorf("write images: %w", err)
	}
	if err := d.Finish(mode); err != nil {
		return Timings{}, fmt.Errorf("finish: %w", err)
	}
	return d.Timings, nil
}
