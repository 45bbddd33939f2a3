package pb_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// stampFile is internal/lazyreg's StampFile.
const stampFile = "generated.sha256"

// TestGeneratedFresh recomputes the sums go generate recorded in
// generated.sha256 (internal/lazyreg): a .proto file of schemas/images
// changed, added or removed since the generated Go was last made, or a
// generated file changed by hand, fails here. It needs neither protoc nor
// its plugins, which CI lacks (TestGeneratedMatchesSchemas compares the
// descriptors with protoc's where protoc is installed).
func TestGeneratedFresh(t *testing.T) {
	const regen = "run go generate ./engine/image/pb (doc.go says what it needs)"
	f, err := os.Open(stampFile)
	if err != nil {
		t.Fatalf("%v: %s", err, regen)
	}
	defer f.Close()
	recorded := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, path, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s: bad line %q", stampFile, sc.Text())
		}
		recorded[path] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	protos, _ := filepath.Glob(filepath.Join("..", "..", "..", "schemas", "images", "*.proto"))
	gen, _ := filepath.Glob("*.pb.go")
	if len(protos) == 0 || len(gen) == 0 {
		t.Fatalf("found %d .proto and %d generated files", len(protos), len(gen))
	}
	present := map[string]bool{"lazyreg.gen.go": true}
	for _, p := range append(protos, gen...) {
		present[filepath.ToSlash(p)] = true
	}
	var paths []string
	for p := range present {
		paths = append(paths, p)
	}
	for p := range recorded {
		if !present[p] {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		proto := strings.HasSuffix(p, ".proto")
		name := p
		if proto {
			name = "schemas/images/" + filepath.Base(p)
		}
		want, ok := recorded[p]
		if !ok {
			t.Errorf("%s is new since go generate last ran: %s", name, regen)
			continue
		}
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			t.Errorf("%s is gone since go generate last ran: %s", name, regen)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(data)); got != want {
			if proto {
				t.Errorf("%s changed since go generate last ran: %s", name, regen)
			} else {
				t.Errorf("%s changed since go generate wrote it (generated code is not edited by hand): %s", name, regen)
			}
		}
	}
}
