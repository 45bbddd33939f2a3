package ns

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine"
)

func TestCheckRequested(t *testing.T) {
	if err := CheckRequested([]string{"uts", "ipc"}); err != nil {
		t.Errorf("uts,ipc: %v", err)
	}
	if err := CheckRequested([]string{"uts", "pid"}); err != nil {
		t.Errorf("uts,pid: %v", err)
	}
	if err := CheckRequested([]string{"uts", "net", "mnt", "ipc", "pid"}); err != nil {
		t.Errorf("all five: %v", err)
	}
	err := CheckRequested([]string{"uts", "user", "cgroup"})
	if !errors.Is(err, engine.ErrNotSupported) || !strings.Contains(err.Error(), "cgroup, user") {
		t.Errorf("uts,user,cgroup: %v, want not supported naming cgroup, user", err)
	}
}

// TestInNamespace reads the hostname of a child in its own UTS namespace
// from a crtools thread that joins it, and checks that no thread of the
// test process is left in that namespace (the hostname seen afterwards,
// from many goroutines, is the test's own).
func TestInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (setns); CI runs as root")
	}
	own, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "hostname crt-ns-unit && exec sleep 100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUTS}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var got string
	// The child sets its hostname when sh gets to run: wait for it
	// (bounded; 2 shared cores can be slow).
	for deadline := time.Now().Add(10 * time.Second); got != "crt-ns-unit" && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		err := inNamespace(cmd.Process.Pid, "uts", func() error {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return err
			}
			got = unix.ByteSliceToString(u.Nodename[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != "crt-ns-unit" {
		t.Fatalf("hostname inside the child's namespace: %q, want crt-ns-unit", got)
	}
	done := make(chan string, 32)
	for i := 0; i < cap(done); i++ {
		go func() { h, _ := os.Hostname(); done <- h }()
	}
	for i := 0; i < cap(done); i++ {
		if h := <-done; h != own {
			t.Fatalf("a goroutine sees hostname %q after inNamespace, want the test's %q", h, own)
		}
	}
	if err := inNamespace(cmd.Process.Pid, "mnt", func() error { return nil }); err == nil {
		t.Error("inNamespace mnt: no error for a namespace it does not handle")
	}
}

// TestLoadRefusesUnsupportedImages: an images directory holding a network
// namespace is refused, naming the first such image (by name), before
// anything else is read; SysV IPC images (restored with their namespace,
// sysv.go) are not refused.
func TestLoadRefusesUnsupportedImages(t *testing.T) {
	for _, c := range []struct {
		files []string
		want  string
	}{
		{[]string{"core-1.img", "ipcns-sem-3.img", "netns-9.img"}, "restore network namespaces (netns-9.img)"},
		{[]string{"ipcns-msg-12.img", "ipcns-msg-11.img", "pstree.img"}, ""},
		{[]string{"ipcns-shm-1.img"}, ""},
		{[]string{"ipcns-var-1.img", "netns-.imgx", "core-2.img"}, ""},
	} {
		dir := t.TempDir()
		for _, f := range c.files {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Load(dir, 2, nil)
		if c.want == "" {
			if err != nil {
				t.Errorf("%v: %v", c.files, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, engine.ErrNotSupported) {
			t.Errorf("%v: got %v, want %q (not supported)", c.files, err, c.want)
		}
	}
}
