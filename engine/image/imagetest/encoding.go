// Package imagetest holds checks of image files that the tests of several
// packages share (engine/image's on its fixtures, test/e2e's on fresh
// dumps).
package imagetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
)

// vtMarshaler is the encoder protoc-gen-go-vtproto generates for every
// type of package pb.
type vtMarshaler interface {
	MarshalVT() ([]byte, error)
}

// CheckEncodings reads every image file in dir with engine/image, whose
// decoder and encoder are generated code (protoc-gen-go-vtproto), and
// checks them against protobuf-go's reflection-based ones: for every entry
// (ghost file chunks too), the generated encoder gives the bytes
// proto.Marshal gives, and proto.Unmarshal of them gives back a message
// proto.Equal to the one the reader decoded. Writing the decoded entries
// and payloads back with image.Writer must give the file byte for byte if
// identical is set (images crtools wrote; CRIU's encoder orders a few
// fields differently). It returns the number of files and entries
// checked.
func CheckEncodings(t testing.TB, dir string, identical bool) (files, entries int) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range names {
		k, _, ok := image.KindByFilename(path)
		if !ok || k.Header == image.HeaderNone {
			continue
		}
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := image.NewReader(bytes.NewReader(orig), path, k, int64(len(orig)), image.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		es, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		w, err := image.NewWriter(&out, path, k)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range es {
			msgs := []proto.Message{e.Msg}
			for _, c := range e.Chunks {
				msgs = append(msgs, c)
			}
			for _, m := range msgs {
				checkMessage(t, path, i, m)
				if err := w.Write(m); err != nil {
					t.Fatalf("%s: write entry %d: %v", path, i, err)
				}
				entries++
			}
			if err := w.WriteExtra(e.Payload); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if identical && !bytes.Equal(out.Bytes(), orig) {
			t.Errorf("%s: written back, %d bytes differ from the file's %d", path, out.Len(), len(orig))
		}
		files++
	}
	return files, entries
}

func checkMessage(t testing.TB, path string, i int, m proto.Message) {
	t.Helper()
	vm, ok := m.(vtMarshaler)
	if !ok {
		t.Fatalf("%s: entry %d: a %T has no generated encoder (run go generate ./engine/image/pb)", path, i, m)
	}
	vt, err := vm.MarshalVT()
	if err != nil {
		t.Fatalf("%s: entry %d: MarshalVT: %v", path, i, err)
	}
	ref, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("%s: entry %d: proto.Marshal: %v", path, i, err)
	}
	if !bytes.Equal(vt, ref) {
		t.Errorf("%s: entry %d (%T): MarshalVT gives\n% x\nproto.Marshal gives\n% x", path, i, m, vt, ref)
	}
	back := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(vt, back); err != nil {
		t.Fatalf("%s: entry %d: proto.Unmarshal of MarshalVT's bytes: %v", path, i, err)
	}
	if !proto.Equal(back, m) {
		t.Errorf("%s: entry %d (%T): proto.Unmarshal gives %v, the reader %v", path, i, m, back, m)
	}
}
