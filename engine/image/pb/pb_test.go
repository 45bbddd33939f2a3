package pb_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/testenv"
)

// TestGeneratedMatchesSchemas compiles schemas/images with protoc and
// checks that the descriptors compiled into the committed Go code are the
// same, so a .proto edited without `go generate` fails here.
func TestGeneratedMatchesSchemas(t *testing.T) {
	protoc := testenv.RequireCommand(t, "protoc")
	pb.Register() // registration is lazy: see doc.go
	schemas := filepath.Join("..", "..", "..", "schemas", "images")
	files, err := filepath.Glob(filepath.Join(schemas, "*.proto"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .proto files in %s: %v", schemas, err)
	}
	out := filepath.Join(t.TempDir(), "set.pb")
	args := append([]string{"-I", schemas, "--descriptor_set_out=" + out}, files...)
	if b, err := exec.Command(protoc, args...).CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	if err := proto.Unmarshal(raw, set); err != nil {
		t.Fatal(err)
	}
	if len(set.File) != len(files) {
		t.Fatalf("protoc produced %d files for %d .proto files", len(set.File), len(files))
	}
	for _, want := range set.File {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(want.GetName())
		if err != nil {
			t.Errorf("%s is not in the generated code (run go generate ./engine/image/pb): %v", want.GetName(), err)
			continue
		}
		got := protodesc.ToFileDescriptorProto(fd)
		if !proto.Equal(got, want) {
			t.Errorf("%s: generated code is stale (run go generate ./engine/image/pb)", want.GetName())
		}
	}
}
