package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/executor"
	"github.com/crtools/crtools/test/harness"
)

// openPty returns a pseudo-terminal pair: the master, and the slave
// opened as a file to hand to a child.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, path := harness.OpenPty(t)
	s, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	return m, s
}

// TestProgressBar: a checkpoint and a restore of a program with about 128 MiB
// of memory draw a progress line on stderr when it is a terminal (memory
// copied at dump in MiB, memory filled at restore in percent), and
// nothing of the kind when stderr is a pipe.
func TestProgressBar(t *testing.T) {
	bin := crtoolsBin(t)
	d := t.TempDir()
	job := filepath.Join(d, "job.yaml")
	os.WriteFile(job, []byte(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: progress}
spec:
  target:
    exec:
      command: [perl, -e, '$| = 1; my $x = "a" x (64 << 20); open(my $r, ">", "ready") or die; close $r; while (1) { select(undef, undef, undef, 0.1); }']
      ready: {file: ready}
  imagesDir: snaps/{{ .Time }}
---
apiVersion: crtools/v1
kind: Restore
metadata: {name: progress-restore}
spec:
  imagesDir: {latestIn: snaps}
  detached: true
`), 0o644)
	env := append(os.Environ(), lockDirEnv+"="+t.TempDir())
	// apply runs both documents; stderr is the terminal's slave side or
	// a pipe. It returns what reached stderr.
	apply := func(term bool) string {
		t.Helper()
		jf := filepath.Join(t.TempDir(), "journal.json")
		cmd := exec.Command(bin, "apply", "-v", "1", "--journal", jf, job)
		cmd.Env = env
		var out, errBuf bytes.Buffer
		cmd.Stdout = &out
		var master *os.File
		done := make(chan struct{})
		if term {
			var slave *os.File
			master, slave = openPty(t)
			defer master.Close()
			cmd.Stderr = slave
			go func() {
				defer close(done)
				io.Copy(&errBuf, master) // ends with EIO once the slave is closed everywhere
			}()
			err := cmd.Start()
			slave.Close()
			if err == nil {
				err = cmd.Wait()
			}
			if err != nil {
				t.Fatalf("apply: %v\n%s", err, out.String())
			}
			<-done
		} else {
			cmd.Stderr = &errBuf
			if err := cmd.Run(); err != nil {
				t.Fatalf("apply: %v\n%s\n%s", err, out.String(), errBuf.String())
			}
		}
		var js []executor.Journal
		b, _ := os.ReadFile(jf)
		if err := json.Unmarshal(b, &js); err != nil || len(js) != 2 {
			t.Fatalf("journal: %v\n%s", err, b)
		}
		jobKillReap(js[1].RootPid)
		return errBuf.String()
	}

	term := apply(true)
	dumpBar := regexp.MustCompile(`\r\x1b\[K\[\d+/9\] write-images \d+ MiB`)
	restoreBar := regexp.MustCompile(`\r\x1b\[K\[\d+/7\] restore-state +(\d+)% \((\d+) MiB\)`)
	if !dumpBar.MatchString(term) {
		t.Errorf("no dump progress on the terminal:\n%q", term)
	}
	var pcts []string
	for _, m := range restoreBar.FindAllStringSubmatch(term, -1) {
		pcts = append(pcts, m[1])
	}
	// 128 MiB filled in reads of at most 64 MiB: the bar moves before it is full.
	if len(pcts) < 2 || pcts[len(pcts)-1] != "100" {
		t.Errorf("restore progress %v, want several steps ending at 100%%:\n%q", pcts, term)
	}
	if !strings.Contains(term, "job finished") {
		t.Errorf("log lines missing on the terminal:\n%q", term)
	}

	pipe := apply(false)
	if strings.ContainsAny(pipe, "\r\x1b") {
		t.Errorf("progress drawn on a pipe:\n%q", pipe)
	}
	if !strings.Contains(pipe, "job finished") {
		t.Errorf("log lines missing on the pipe:\n%q", pipe)
	}
}
