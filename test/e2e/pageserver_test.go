package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// pageServer runs `crtools page-server` on a loopback ephemeral port and
// returns its port and a channel with its exit error; its stderr is in
// *stderr once that has arrived.
func pageServer(t *testing.T, dir, log string, stderr *bytes.Buffer) (string, <-chan error) {
	t.Helper()
	cmd := exec.Command(harness.BuildCrtools(t), "page-server", "-D", dir, "--address", "127.0.0.1", "-v", "2", "-o", log)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start page-server: %v", err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	line, rerr := bufio.NewReader(out).ReadString('\n')
	go func() {
		io.Copy(io.Discard, out)
		done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "Listening on ")
	if rerr != nil || !ok {
		t.Fatalf("page-server printed %q (%v), want Listening on ADDR", line, rerr)
	}
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:], done
}

// A dump sends its pages to a page server in another process; the other
// images stay in the dump's directory. Put together, they restore.
func TestDumpToPageServer(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "memory.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)

	srvDir := filepath.Join(t.TempDir(), "server")
	var srvErr bytes.Buffer
	port, srvDone := pageServer(t, srvDir, filepath.Join(w.Dir, "page-server.log"), &srvErr)

	dumpDir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dumpDir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"),
		"--page-server", "--address", "127.0.0.1", "--port", port)
	if code != 0 {
		t.Fatalf("crtools dump --page-server: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case err := <-srvDone:
		if err != nil {
			t.Fatalf("page-server: %v\n%s\n%s", err, srvErr.String(), readLog(w, "page-server.log"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("page-server did not exit after the dump")
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)

	// Pages on the server, everything else with the dump.
	srvFiles := harness.DirNames(t, srvDir)
	for _, n := range harness.DirNames(t, dumpDir) {
		if strings.HasPrefix(n, "pagemap-") || strings.HasPrefix(n, "pages-") {
			t.Errorf("dump dir has %s: pages should have gone to the page server", n)
		}
	}
	var pagemaps int
	for _, n := range srvFiles {
		switch {
		case strings.HasPrefix(n, "pagemap-"):
			pagemaps++
		case strings.HasPrefix(n, "pages-"), strings.HasSuffix(n, ".log"):
		default:
			t.Errorf("page server dir has %s", n)
		}
	}
	if pagemaps < 2 {
		t.Errorf("page server stored %d pagemaps, want the task's and the shared memory's: %v", pagemaps, srvFiles)
	}
	for _, n := range harness.DirNames(t, dumpDir) {
		if strings.HasSuffix(n, ".log") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dumpDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(srvDir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	restoreDetached(t, w, srvDir)
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}

// A dump whose page server refuses its pages (it already holds a pagemap
// of that PID) fails and rolls back: the workload runs on untouched, no
// images directory appears, and the page server keeps only the old file.
func TestDumpToPageServerRefused(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	w := harness.StartWorkload(t, harness.BuildC(t, "simple.c"))
	w.MustReady(10 * time.Second)

	srvDir := t.TempDir()
	old := filepath.Join(srvDir, fmt.Sprintf("pagemap-%d.img", w.Pid))
	if err := os.WriteFile(old, []byte("from an earlier dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	var srvErr bytes.Buffer
	port, srvDone := pageServer(t, srvDir, filepath.Join(w.Dir, "page-server.log"), &srvErr)
	dumpDir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dumpDir, "-v", "2", "-o", filepath.Join(w.Dir, "dump.log"),
		"--page-server", "--address", "127.0.0.1", "--port", port)
	if code != 1 || !strings.Contains(out, "page server") {
		t.Fatalf("dump to a refusing page server: exit %d, want 1 naming the page server\n%s", code, out)
	}
	select {
	case err := <-srvDone:
		if err == nil {
			t.Error("page-server exited 0 after refusing the dump")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("page-server did not exit")
	}
	if !strings.Contains(srvErr.String(), "already holds") {
		t.Errorf("page-server does not say why it refused:\n%s", srvErr.String())
	}
	if _, err := os.Stat(dumpDir); !os.IsNotExist(err) {
		t.Errorf("failed dump left %s (%v)", dumpDir, err)
	}
	if got := harness.DirNames(t, srvDir); len(got) != 1 {
		t.Errorf("page server dir holds %v, want only the old pagemap", got)
	}
	if b, _ := os.ReadFile(old); string(b) != "from an earlier dump" {
		t.Error("the old pagemap changed")
	}
	if err := w.VerifyAndExit(10 * time.Second); err != nil {
		t.Fatalf("workload after the failed dump: %v", err)
	}
}
