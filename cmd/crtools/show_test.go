package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const showFixture = "../../engine/image/testdata/criu-4.2-tree"

// TestShowCommand runs `crtools show` as the man page writes it, with the
// options before and after the command word.
func TestShowCommand(t *testing.T) {
	code, out, errs := runCLI(t, "show", "-f", filepath.Join(showFixture, "pstree.img"))
	if code != 0 || !strings.Contains(out, "pid: 11215") || !strings.Contains(out, "threads: [11215, 11217]") {
		t.Fatalf("show -f: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "-D", showFixture, "show", "-f", "pipes-data.img", "--json")
	var doc struct {
		Magic   string
		Entries []map[string]any
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Magic != "PIPES_DATA" || doc.Entries[0]["extra"] != "cGlwZSBkYXRh" {
		t.Fatalf("show --json: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "show", "-D", showFixture)
	if code != 0 || !strings.Contains(out, "Process tree (2 tasks)") || !strings.Contains(out, "eventfd count 5") {
		t.Fatalf("show -D: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "show", "-c", "-f", filepath.Join(showFixture, "pagemap-shmem-13637.img"))
	if code != 0 || !strings.Contains(out, "shared page") {
		t.Fatalf("show -c: exit %d\n%s%s", code, out, errs)
	}
}

func TestShowErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.img")
	if err := os.WriteFile(junk, []byte("\x01\x02\x03\x04 plainly not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"show", "-f", junk}, 1, junk + ": not an image file"},
		{[]string{"show", "-f", filepath.Join(dir, "missing.img")}, 1, "no such file"},
		{[]string{"show"}, 2, "show needs -f FILE or -D DIR"},
		{[]string{"show", "-D", showFixture, "--json"}, 2, "add -f FILE"},
		{[]string{"show", "-D", filepath.Join(dir, "nodir")}, 1, "no such file"},
	}
	for _, c := range cases {
		code, out, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, out, errs, c.code, c.want)
		}
		if c.code == 1 && strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: error is not one line: %q", c.args, errs)
		}
	}
}
