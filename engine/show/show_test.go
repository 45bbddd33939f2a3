package show

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/image"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const criuDir = "../image/testdata/criu-4.2-tree"

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it); got:\n%s", name, got)
	}
}

func TestGoldenFiles(t *testing.T) {
	cases := []struct {
		golden, file string
		opts         Options
	}{
		{"pstree.txt", "pstree.img", Options{}},
		{"pstree.json", "pstree.img", Options{JSON: true}},
		{"core-11215.txt", "core-11215.img", Options{}},
		{"core-11217.json", "core-11217.img", Options{JSON: true}},
		{"mm-11215.txt", "mm-11215.img", Options{}},
		{"files.txt", "files.img", Options{}},
		{"files.json", "files.img", Options{JSON: true}},
		{"pipes-data.txt", "pipes-data.img", Options{}},
		{"pipes-data.json", "pipes-data.img", Options{JSON: true}},
		{"ghost-file-1.txt", "ghost-file-1.img", Options{}},
		{"sk-queues.json", "sk-queues.img", Options{JSON: true}},
		{"pagemap-11215-c.txt", "pagemap-11215.img", Options{Pages: true}},
		{"pagemap-shmem-13637-c.txt", "pagemap-shmem-13637.img", Options{Pages: true}},
		{"inventory.json", "inventory.img", Options{JSON: true}},
		{"memfd.txt", "memfd.img", Options{}},
		{"memfd.json", "memfd.img", Options{JSON: true}},
		{"stats-dump.txt", "stats-dump", Options{}},
	}
	for _, c := range cases {
		t.Run(c.golden, func(t *testing.T) {
			var out bytes.Buffer
			if err := File(&out, filepath.Join(criuDir, c.file), c.opts); err != nil {
				t.Fatal(err)
			}
			if c.opts.JSON && !json.Valid(out.Bytes()) {
				t.Fatal("output is not valid JSON")
			}
			golden(t, c.golden, out.Bytes())
		})
	}
}

func TestGoldenDir(t *testing.T) {
	var out bytes.Buffer
	if err := Dir(&out, criuDir); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	// The facts of the fixture, independent of layout.
	for _, want := range []string{"11215,11217", "11218  11215", "/srv/crfx/data.txt (O_RDWR|O_LARGEFILE, pos 7)",
		"eventfd count 5", "interval 60.000000000s", "9 bytes queued", "pages-2.img",
		"memfd 1 memfd:/dev/zero: 4.0 KiB, seals SEAL, mode 777, contents in pagemap-shmem-13637.img"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	golden(t, "dir.txt", out.Bytes())
}

// TestJSONLikeCrit checks the crit conventions: the magic name, entries,
// proto field names, hex strings for addresses and flags, enum names, and
// payloads as base64 "extra".
func TestJSONLikeCrit(t *testing.T) {
	var out bytes.Buffer
	if err := File(&out, filepath.Join(criuDir, "mm-11215.img"), Options{JSON: true}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Magic   string           `json:"magic"`
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Magic != "MM" || len(doc.Entries) != 1 {
		t.Fatalf("magic %q, %d entries", doc.Magic, len(doc.Entries))
	}
	vmas := doc.Entries[0]["vmas"].([]any)
	v0 := vmas[0].(map[string]any)
	if s, _ := v0["start"].(string); !strings.HasPrefix(s, "0x55") {
		t.Errorf("vma start %v, want a hex string", v0["start"])
	}
	if _, ok := doc.Entries[0]["exe_file_id"].(float64); !ok {
		t.Errorf("exe_file_id %v, want a number", doc.Entries[0]["exe_file_id"])
	}
	out.Reset()
	if err := File(&out, filepath.Join(criuDir, "files.img"), Options{JSON: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"type": "UNIXSK"`) {
		t.Error("enum not shown by name")
	}
}

// TestHostileFiles: random bytes and every truncation of real images give
// one error naming the file, never a panic.
func TestHostileFiles(t *testing.T) {
	dir := t.TempDir()
	rnd := filepath.Join(dir, "random.img")
	if err := os.WriteFile(rnd, []byte("\x8f\x11random bytes that are no image\x00\x01"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := File(&bytes.Buffer{}, rnd, Options{})
	var ue *image.UnknownImageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), rnd) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("random file: %v", err)
	}
	for _, name := range []string{"core-11215.img", "files.img", "pagemap-11215.img", "pipes-data.img", "ghost-file-1.img", "inventory.img"} {
		data, err := os.ReadFile(filepath.Join(criuDir, name))
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(data); n += 1 + n/50 {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := File(&out, p, Options{JSON: n%2 == 0})
			if err == nil {
				// Images of one entry must not survive any cut; images
				// of many may be cut at an entry boundary, and a ghost
				// file's contents run to EOF, so any cut is valid.
				k, _, _ := image.KindByFilename(name)
				if k.Single {
					t.Fatalf("%s cut at %d bytes: no error", name, n)
				}
				continue
			}
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("%s cut at %d: error does not name the file: %v", name, n, err)
			}
			if out.Len() != 0 {
				t.Fatalf("%s cut at %d: partial output before the error", name, n)
			}
		}
	}
	// A directory summary with one damaged image names that image.
	set := filepath.Join(dir, "set")
	if err := os.MkdirAll(set, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(criuDir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(criuDir, e.Name()))
		if e.Name() == "mm-11218.img" {
			b = b[:len(b)-10]
		}
		if err := os.WriteFile(filepath.Join(set, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err = Dir(&bytes.Buffer{}, set)
	var te *image.TruncatedError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "mm-11218.img") {
		t.Fatalf("damaged set: %v", err)
	}
}

func TestRawPages(t *testing.T) {
	var out bytes.Buffer
	if err := File(&out, filepath.Join(criuDir, "pages-1.img"), Options{Pages: true}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "shared page") || !strings.Contains(out.String(), "\n  *\n") {
		t.Errorf("pages dump:\n%s", out.String())
	}
}
