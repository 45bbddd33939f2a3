package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/image/pb"
)

// hotEnv makes the test binary run hotPath on the directories it names
// instead of its tests.
const hotEnv = "CRTOOLS_IMAGE_HOT_PATH"

func TestMain(m *testing.M) {
	if dirs := os.Getenv(hotEnv); dirs != "" {
		n, err := hotPath(strings.Split(dirs, string(os.PathListSeparator)))
		if err != nil {
			fmt.Println("hot path:", err)
			os.Exit(1)
		}
		fmt.Printf("hot path: %d files ok\n", n)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hotPath does in a fresh process what dump and restore do with image
// files, on every image in dirs: read them (ReadAll, ReadOne for the
// single-entry kinds, ReadPagemap for pagemaps of the first directory),
// write every entry and payload back to a new file, check that the new
// file has the old one's bytes (in dirs after the first, written by
// crtools), and finally that none of it registered package pb's
// descriptors, whose cost registration on first use is there to avoid.
func hotPath(dirs []string) (int, error) {
	if pb.Registered() {
		return 0, fmt.Errorf("descriptors registered at start-up")
	}
	out, err := os.MkdirTemp("", "hotpath")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(out)
	n := 0
	for di, dir := range dirs {
		names, err := filepath.Glob(filepath.Join(dir, "*"))
		if err != nil {
			return n, err
		}
		for _, path := range names {
			k, id, ok := KindByFilename(path)
			if !ok || k.Header == HeaderNone {
				continue
			}
			es, err := ReadFile(dir, k, id)
			if err != nil {
				return n, err
			}
			if k.Single {
				if err := ReadOne(dir, k, id, k.NewEntry(true)); err != nil {
					return n, err
				}
			}
			if di == 0 && (k == Pagemap || k == ShmemPagemap) {
				if _, err := ReadPagemap(dir, k, id); err != nil {
					return n, err
				}
			}
			w, err := Create(out, k, id)
			if err != nil {
				return n, err
			}
			for _, e := range es {
				if err := w.Write(e.Msg); err != nil {
					return n, err
				}
				for _, c := range e.Chunks {
					if err := w.Write(c); err != nil {
						return n, err
					}
				}
				if err := w.WriteExtra(e.Payload); err != nil {
					return n, err
				}
			}
			if err := w.Close(); err != nil {
				return n, err
			}
			if _, err := ReadFile(out, k, id); err != nil {
				return n, fmt.Errorf("re-read: %w", err)
			}
			if di > 0 {
				a, err1 := os.ReadFile(path)
				b, err2 := os.ReadFile(k.Path(out, id))
				if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
					return n, fmt.Errorf("%s: written back differently (%v %v)", path, err1, err2)
				}
			}
			n++
		}
	}
	if pb.Registered() {
		return n, fmt.Errorf("reading and writing images registered the descriptors")
	}
	return n, nil
}

// TestHotPathNeedsNoRegistration: reading and writing every kind of image
// (the CRIU fixture, and two fully populated entries of every kind) in a
// fresh process never registers package pb's descriptors: dump and
// restore do not pay for them.
func TestHotPathNeedsNoRegistration(t *testing.T) {
	filled := t.TempDir()
	kinds := 0
	for _, k := range Kinds {
		if k.Header == HeaderNone {
			continue
		}
		w, err := Create(filled, k, 0x2a)
		must(t, err)
		n := 2
		if k.Payload == PayloadGhost || k.Payload == PayloadRest || k.Single {
			n = 1
		}
		for i := 0; i < n; i++ {
			m := k.NewEntry(i == 0)
			fill(m.ProtoReflect(), i+1, 0)
			p := payloadFor(k, m, i)
			must(t, w.Write(m))
			must(t, w.WriteExtra(p))
		}
		must(t, w.Close())
		kinds++
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hotEnv+"="+criuDir+string(os.PathListSeparator)+filled)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var files int
	if _, err := fmt.Sscanf(string(out), "hot path: %d files ok", &files); err != nil || files < 20+kinds {
		t.Fatalf("checked too few files (%d kinds written): %s", kinds, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}
