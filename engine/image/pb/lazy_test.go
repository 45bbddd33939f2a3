package pb_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/crtools/crtools/engine/image/pb"
)

// coldEnv makes the test binary run coldUse instead of its tests.
const coldEnv = "CRTOOLS_PB_COLD_USE"

func TestMain(m *testing.M) {
	if os.Getenv(coldEnv) == "1" {
		if err := coldUse(); err != nil {
			fmt.Println("cold use:", err)
			os.Exit(1)
		}
		fmt.Println("cold use: ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// coldUse runs in a fresh process: nothing has registered the descriptors
// yet. Several goroutines use package pb reflectively at the same time,
// each in a different way, and must all get the right answer.
func coldUse() error {
	if pb.Registered() {
		return fmt.Errorf("descriptors registered before any reflective use")
	}
	if n := protoregistry.GlobalFiles.NumFilesByPackage("crtools.images"); n != 0 {
		return fmt.Errorf("%d files of package crtools.images registered at start-up (an init left in a .pb.go file?)", n)
	}
	core := &pb.CoreEntry{Mtype: pb.CoreEntry_X86_64.Enum(), Tc: &pb.TaskCoreEntry{
		TaskState: proto.Uint32(1), ExitCode: proto.Uint32(0), Personality: proto.Uint32(0), Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0), Comm: proto.String("cold")}}
	uses := map[string]func() (string, error){
		"protojson": func() (string, error) { b, err := protojson.Marshal(core); return string(b), err },
		"prototext": func() (string, error) { return prototext.Format(core), nil },
		"String":    func() (string, error) { return core.String(), nil },
		"enum":      func() (string, error) { return pb.CoreEntry_X86_64.String(), nil },
		"Equal": func() (string, error) {
			return fmt.Sprint(proto.Equal(core, proto.Clone(core))), nil
		},
		"Marshal": func() (string, error) {
			b, err := proto.Marshal(core)
			if err != nil {
				return "", err
			}
			back := &pb.CoreEntry{}
			if err := proto.Unmarshal(b, back); err != nil {
				return "", err
			}
			return back.GetTc().GetComm(), nil
		},
		"name": func() (string, error) {
			return string((&pb.PstreeEntry{}).ProtoReflect().Descriptor().FullName()), nil
		},
	}
	want := map[string]string{
		"protojson": `"mtype":"X86_64"`, "prototext": `comm:"cold"`, "String": `comm:"cold"`, "enum": "X86_64",
		"Equal": "true", "Marshal": "cold", "name": "crtools.images.pstree_entry",
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	start := make(chan struct{})
	for name, use := range uses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := use()
			if err == nil && !strings.Contains(strings.ReplaceAll(got, " ", ""), want[name]) {
				err = fmt.Errorf("got %q, want it to hold %q", got, want[name])
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, name+": "+err.Error())
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	if !pb.Registered() {
		return fmt.Errorf("reflective use did not register the descriptors")
	}
	if pb.File_core_proto == nil {
		return fmt.Errorf("File_core_proto is nil after registration")
	}
	if _, err := protoregistry.GlobalFiles.FindFileByPath("mm.proto"); err != nil {
		return fmt.Errorf("mm.proto not registered: %w", err)
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName("crtools.images.vma_entry"); err != nil {
		return fmt.Errorf("vma_entry not registered: %w", err)
	}
	return nil
}

// TestColdReflectiveUse: in a fresh process, the first reflective uses of
// package pb's types (protojson, prototext, String, an enum's String,
// proto.Equal and Clone, proto.Marshal, a descriptor), made at the same
// time from several goroutines, register every descriptor once and work.
func TestColdReflectiveUse(t *testing.T) {
	for i := 0; i < 3; i++ { // the goroutines race differently each time
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), coldEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "cold use: ok") {
			t.Fatalf("run %d: %v\n%s", i, err, out)
		}
	}
}

// TestRegisterThenLookUp: Register makes the files findable by name.
func TestRegisterThenLookUp(t *testing.T) {
	pb.Register()
	if !pb.Registered() || pb.File_pstree_proto == nil {
		t.Fatal("Register did not register")
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName("crtools.images.core_entry"); err != nil {
		t.Fatal(err)
	}
}
