package spec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIssueExamplesValidate: the two documents of the issue validate as
// written.
func TestIssueExamplesValidate(t *testing.T) {
	jobs, err := LoadFile(filepath.Join("testdata", "issue-examples.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 {
		t.Fatalf("got %d jobs, want 2", len(jobs))
	}
	c, r := jobs[0].Checkpoint, jobs[1].Restore
	if c == nil || r == nil {
		t.Fatalf("kinds: %+v %+v", jobs[0], jobs[1])
	}
	if c.Target.PidFile != "/run/counter.pid" || !c.LeaveRunning || c.Retention.KeepLast != 3 ||
		c.Log.File != "dump.log" || *c.Log.Level != 2 || c.Hooks.PreDump.Run[2] != "echo freezing" {
		t.Errorf("checkpoint decoded wrong: %+v", c)
	}
	if r.ImagesDir.LatestIn != "/var/lib/crtools/counter" || !r.Detached || r.VethPairs[0].Outside != "veth-ctr0" ||
		r.Hooks.PostRestore.Run[0] != "sh" {
		t.Errorf("restore decoded wrong: %+v", r)
	}
	if jobs[1].Source != filepath.Join("testdata", "issue-examples.yaml")+"#2" {
		t.Errorf("source %q", jobs[1].Source)
	}
}

const head = "apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: t}\nspec:\n"

// TestValidationErrors: each bad spec gives an error at the right
// file:line:column, naming the field and what was expected.
func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string // substrings of the error, the first includes the position
	}{
		{"unknown top field", "apiVersion: crtools/v1\nkind: Checkpoint\nmetadata: {name: t}\nspec: {target: {pid: 1}, imagesDir: /x}\nstatus: {}\n",
			[]string{`bad.yaml:5:1: status: unknown field "status", expected one of: apiVersion, kind, metadata, spec`}},
		{"wrong apiVersion", "apiVersion: crtools/v2\nkind: Checkpoint\nmetadata: {name: t}\nspec: {target: {pid: 1}, imagesDir: /x}\n",
			[]string{`bad.yaml:1:13: apiVersion: got crtools/v2, expected crtools/v1`}},
		{"unknown kind", "apiVersion: crtools/v1\nkind: Migrate\nmetadata: {name: t}\nspec: {}\n",
			[]string{`bad.yaml:2:7: kind: got Migrate, expected one of: Checkpoint, Restore`}},
		{"missing spec", "apiVersion: crtools/v1\nkind: Restore\nmetadata: {name: t}\n",
			[]string{`bad.yaml:1:1: missing required field "spec"`}},
		{"pid not a number", head + "  target: {pid: abc}\n  imagesDir: /x\n",
			[]string{`bad.yaml:5:17: spec.target.pid: expected an integer, got a string`}},
		{"two targets", head + "  target:\n    pid: 3\n    pidFile: /run/x.pid\n  imagesDir: /x\n",
			[]string{`bad.yaml:6:5: spec.target: expected exactly one of pid, pidFile, exec`}},
		{"misspelt field", head + "  target: {pid: 1}\n  imagesDir: /x\n  leaveRuning: true\n",
			[]string{`bad.yaml:7:3: spec.leaveRuning: unknown field "leaveRuning", expected one of: hooks, imagesDir, leaveRunning`}},
		{"bad duration", head + "  target: {pid: 1}\n  imagesDir: /x/{{ .Time }}\n  retention: {keepWithin: 3 days}\n",
			[]string{`bad.yaml:7:27: spec.retention.keepWithin: got "3 days", expected a duration such as 30s, 5m, 24h or 7d`}},
		{"bad namespace", head + "  target: {pid: 1}\n  imagesDir: /x\n  namespaces: [uts, user]\n",
			[]string{`bad.yaml:7:21: spec.namespaces[1]: got user, expected one of: uts, ipc, mnt, pid, net`}},
		{"hook item not a string", head + "  target: {pid: 1}\n  imagesDir: /x\n  hooks:\n    preDump: [sleep, 5]\n",
			[]string{`bad.yaml:8:22: spec.hooks.preDump[1]: expected a string, got a number`}},
		{"bad port", head + "  target: {pid: 1}\n  imagesDir: /x\n  pageServer: {address: h, port: 99999}\n",
			[]string{`bad.yaml:7:34: spec.pageServer.port: expected at most 65535, got 99999`}},
		{"restore veth name too long", "apiVersion: crtools/v1\nkind: Restore\nmetadata: {name: t}\nspec:\n  imagesDir: /x\n  vethPairs: [{inside: eth0, outside: a-very-long-interface-name}]\n",
			[]string{`bad.yaml:6:39: spec.vethPairs[0].outside: got "a-very-long-interface-name", expected an interface name`}},
		{"retention without template", head + "  target: {pid: 1}\n  imagesDir: /x\n  retention: {keepLast: 2}\n",
			[]string{`bad.yaml:6:14: spec.imagesDir: retention needs a per-run name: put {{ .Time }} in the last element of imagesDir`}},
		{"unknown template key", head + "  target: {pid: 1}\n  imagesDir: /x/{{ .Date }}\n",
			[]string{`bad.yaml:6:14: spec.imagesDir: expand template:`, `expected {{ .Time }} or {{ .Name }}`}},
		{"leaveRunning and leaveStopped", head + "  target: {pid: 1}\n  imagesDir: /x\n  leaveRunning: true\n  leaveStopped: true\n",
			[]string{`bad.yaml:8:3: spec.leaveStopped: leaveRunning and leaveStopped exclude each other`}},
		{"duplicate field", head + "  target: {pid: 1}\n  imagesDir: /x\n  imagesDir: /y\n",
			[]string{`bad.yaml:7:3: spec.imagesDir: field given twice`}},
		{"YAML syntax", head + "  target: {pid: 1\n  imagesDir: /x\n",
			[]string{`bad.yaml:`, `invalid YAML`}},
		{"second document bad", head + "  target: {pid: 1}\n  imagesDir: /x\n---\napiVersion: crtools/v1\nkind: Restore\nmetadata: {name: r}\nspec: {imagesDir: {latestIn: /x, newest: true}}\n",
			[]string{`bad.yaml:11:34: spec.imagesDir.newest: unknown field "newest", expected one of: latestIn`}},
		{"restore log level out of range", "apiVersion: crtools/v1\nkind: Restore\nmetadata: {name: t}\nspec:\n  imagesDir: /x\n  log: {level: 5}\n",
			[]string{`bad.yaml:6:16: spec.log.level: expected at most 2, got 5`}},
		{"self-referencing alias", "a: &x [*x]\n",
			[]string{`bad.yaml:`, `too deeply nested`}},
		{"empty file", "# nothing\n",
			[]string{`bad.yaml: no job in file`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load("bad.yaml", []byte(c.doc), "/base")
			if err == nil {
				t.Fatalf("no error for:\n%s", c.doc)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not spec.Errors: %v", err, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, c.want[0]) && !strings.Contains(msg, "\n"+c.want[0]) {
				t.Errorf("got:\n%s\nwant a line starting with:\n%s", msg, c.want[0])
			}
			for _, w := range c.want[1:] {
				if !strings.Contains(msg, w) {
					t.Errorf("got:\n%s\nwant it to contain %q", msg, w)
				}
			}
		})
	}
}

// TestRelativePaths: relative paths are relative to the spec's directory.
func TestRelativePaths(t *testing.T) {
	doc := head + "  target:\n    exec: {command: [./srv, x], stdout: out.log, ready: {file: r}}\n  imagesDir: snaps/{{ .Time }}\n  hooks: {scripts: [hook.sh]}\n"
	jobs, err := Load("x.yaml", []byte(doc), "/specs")
	if err != nil {
		t.Fatal(err)
	}
	c := jobs[0].Checkpoint
	got := []string{c.ImagesDir, c.Target.Exec.Command[0], c.Target.Exec.Command[1], c.Target.Exec.Stdout, c.Target.Exec.Ready.File, c.Hooks.Scripts[0]}
	want := []string{"/specs/snaps/{{ .Time }}", "/specs/srv", "x", "/specs/out.log", "/specs/r", "/specs/hook.sh"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v want %v", got, want)
	}
}

// TestExamplesValidate: every recipe in examples/ validates.
func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		if _, err := LoadFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// FuzzLoad: the loader never panics, whatever the input.
func FuzzLoad(f *testing.F) {
	seed, _ := os.ReadFile(filepath.Join("testdata", "issue-examples.yaml"))
	f.Add(seed)
	f.Add([]byte(head + "  target: {pid: 1}\n  imagesDir: /x\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("--- !!binary\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		Load("fuzz.yaml", data, "/")
	})
}
