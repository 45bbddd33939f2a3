package ptrace

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Orphans of killed test children must not wait for a slow PID 1.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	os.Exit(m.Run())
}

// requireRoot fails (never skips) without root: CI runs as root and every
// test here needs to trace processes.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("ptrace tests need root (CI runs them as root)")
	}
}

// startSleep starts `sleep 1000` untraced and kills it at the end of the test.
func startSleep(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Let it reach its nanosleep.
	waitState(t, cmd.Process.Pid, 'S')
	return cmd
}

// waitState waits until /proc/PID/stat shows the given state letter.
func waitState(t testing.TB, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if procState(pid) == state {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("pid %d did not reach state %c (is %c)", pid, state, procState(pid))
}

func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return '?'
	}
	// The state follows the last ')' (comm may contain anything).
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2]
		}
	}
	return '?'
}

func itoa(i int) string {
	return string(appendInt(nil, i))
}

func appendInt(b []byte, i int) []byte {
	if i < 0 {
		b = append(b, '-')
		i = -i
	}
	var d [20]byte
	n := len(d)
	for {
		n--
		d[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return append(b, d[n:]...)
}
