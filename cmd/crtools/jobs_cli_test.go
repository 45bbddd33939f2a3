package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crtools/crtools/executor"
)

// TestJobCommandsBadInput: validate, plan and apply answer every bad
// input with exit 2 and a clear message: one line for one problem, a
// count and at most maxSpecErrors lines (plus "... and N more") for many;
// and apply of a file whose second document is bad runs nothing.
func TestJobCommandsBadInput(t *testing.T) {
	d := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(d, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	good := "apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: g}\nspec:\n  target: {exec: {command: [touch, ran]}}\n  imagesDir: imgs\n"
	oneBad := write("one.yaml", "apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: x}\nspec:\n  target: {pid: 1}\n  imagesDir: /x\n  leaveRuning: true\n")
	var many strings.Builder
	for i := 0; i < 15; i++ {
		fmt.Fprintf(&many, "field%d: 1\n", i)
	}
	manyBad := write("many.yaml", many.String())
	secondBad := write("second.yaml", good+"---\napiVersion: crtools/v1\nkind: Restore\nmetadata: {name: r}\nspec: {imagesDir: imgs, detach: true}\n")
	secondUnsupported := write("unsupported.yaml", good+"---\napiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: r}\nspec:\n  target: {pid: 1}\n  imagesDir: imgs2\n  options: {root: /mnt}\n")
	cases := []struct {
		name string
		args []string
		code int
		want string // the first line of stderr starts with it
		n    int    // lines on stderr
	}{
		{"no file", []string{"FILE"}, exitUsage, "crtools: ", 2},
		{"missing file", []string{filepath.Join(d, "nope.yaml")}, exitUsage, "crtools: read spec: open " + filepath.Join(d, "nope.yaml") + ": no such file or directory", 1},
		{"directory", []string{d}, exitUsage, "crtools: read spec: read " + d + ": is a directory", 1},
		{"empty", []string{write("empty.yaml", "")}, exitUsage, "crtools: invalid spec: " + filepath.Join(d, "empty.yaml") + ": no job in file", 1},
		{"one problem", []string{oneBad}, exitUsage, "crtools: invalid spec: " + oneBad + `:7:3: spec.leaveRuning: unknown field "leaveRuning"`, 1},
		{"many problems", []string{manyBad}, exitUsage, "crtools: invalid spec (16 problems):", 1 + maxSpecErrors + 1},
		{"second document bad", []string{secondBad}, exitUsage, "crtools: invalid spec: " + secondBad + `:11:25: spec.detach: unknown field "detach"`, 1},
		{"second document not supported", []string{secondUnsupported}, exitFailed, "crtools: " + secondUnsupported + "#2: spec.options.root: changing the root filesystem at checkpoint time (-r/--root) is not supported yet", 1},
		{"two files", []string{oneBad, manyBad}, exitUsage, "crtools: accepts 1 arg(s), received 2", 2},
	}
	for _, cmd := range []string{"validate", "plan", "apply"} {
		for _, c := range cases {
			if cmd == "validate" && (strings.HasPrefix(c.name, "second document not") || c.name == "two files") {
				continue // valid: support is a matter of plan and apply; validate takes several files
			}
			t.Run(cmd+"/"+c.name, func(t *testing.T) {
				args := append([]string{cmd}, c.args...)
				if c.args[0] == "FILE" {
					args = []string{cmd}
					c.want = "crtools: accepts 1 arg(s), received 0"
					if cmd == "validate" {
						c.want = "crtools: requires at least 1 arg(s), only received 0"
					}
				}
				code, out, errs := runCLI(t, args...)
				ls := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
				if code != c.code || !strings.HasPrefix(ls[0], c.want) || len(ls) != c.n {
					t.Errorf("exit %d (want %d), stderr:\n%s\nwant %d line(s), the first starting with %q", code, c.code, errs, c.n, c.want)
				}
				if cmd == "apply" && out != "" {
					t.Errorf("apply printed %q", out)
				}
				if _, err := os.Stat(filepath.Join(d, "ran")); err == nil {
					t.Fatalf("the first document ran")
				}
			})
		}
	}
}

// TestApplyRollbackIncompleteExit3: an undo that fails makes apply exit 3
// and say, in its one-line error and in the journal, what is left to fix.
func TestApplyRollbackIncompleteExit3(t *testing.T) {
	sl := exec.Command("sleep", "60")
	if err := sl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sl.Process.Kill(); sl.Wait() }()
	d := t.TempDir()
	job := filepath.Join(d, "job.yaml")
	os.WriteFile(job, []byte(fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: incomplete}
spec:
  target: {pid: %d}
  imagesDir: snaps/{{ .Time }}
  hooks:
    preDump: {run: ["true"], undo: [sh, -c, "echo cannot undo >&2; exit 3"]}
`, sl.Process.Pid)), 0o644)
	t.Setenv(lockDirEnv, t.TempDir())
	t.Setenv(executor.FaultEnv, "freeze")
	jf := filepath.Join(d, "journal.json")
	code, out, errs := runCLI(t, "apply", "-v", "0", "--journal", jf, job)
	want := `crtools: checkpoint "incomplete" failed: step freeze: fault injected at step freeze (CRTOOLS_FAULT_STEP); rollback incomplete, left to fix: hook-pre-dump: run sh -c 'echo cannot undo >&2; exit 3' failed: sh: exit status 3`
	if code != exitIncomplete || !strings.Contains(errs, want+"\n") {
		t.Errorf("exit %d, stderr:\n%s\nwant a line %q", code, errs, want)
	}
	if !strings.Contains(out, "hook-pre-dump     undo-failed") {
		t.Errorf("journal on stdout:\n%s", out)
	}
	var js []executor.Journal
	b, _ := os.ReadFile(jf)
	if err := json.Unmarshal(b, &js); err != nil || len(js) != 1 || len(js[0].Left) != 1 || js[0].Result != executor.ResultRollbackIncomplete {
		t.Errorf("journal file: %v\n%s", err, b)
	}
}
