package show

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestSeccompSummary: show -D lists the threads under seccomp, with their
// filters from the oldest (CRIU's layout: the thread's index is its oldest
// filter, prev the next newer), and survives an index out of range.
func TestSeccompSummary(t *testing.T) {
	dir := buildSet(t)
	u32, u64 := proto.Uint32, proto.Uint64
	prog := bytes.Repeat([]byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, 3) // 3 × RET ALLOW
	se := &pb.SeccompEntry{SeccompFilters: []*pb.SeccompFilter{
		{Filter: prog[:8], Flags: u32(3)},           // #0 the newest
		{Filter: prog, Prev: u32(0), Flags: u32(1)}, // #1 the oldest
	}}
	if err := image.WriteFile(dir, image.Seccomp, 0, se); err != nil {
		t.Fatal(err)
	}
	core := func(comm string, tc *pb.ThreadCoreEntry) *pb.CoreEntry {
		tc.FutexRla, tc.FutexRlaLen, tc.Comm = u64(0), u32(0), proto.String(comm)
		return &pb.CoreEntry{Mtype: pb.CoreEntry_X86_64.Enum(), ThreadCore: tc,
			Tc: &pb.TaskCoreEntry{TaskState: u32(1), ExitCode: u32(0), Personality: u32(0), Flags: u32(0), BlkSigset: u64(0), Comm: proto.String(comm)}}
	}
	if err := image.WriteFile(dir, image.Core, 100, core("parent", &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_filter.Enum(), SeccompFilter: u32(1)})); err != nil {
		t.Fatal(err)
	}
	if err := image.WriteFile(dir, image.Core, 101, core("worker", &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_strict.Enum()})); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Dir(&out, dir); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Seccomp (2 filters in seccomp.img",
		"100      100      filter   #1 3 [TSYNC], #0 1 [TSYNC|LOG]",
		"100      101      strict",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	// A hostile index is shown as such.
	if err := image.WriteFile(dir, image.Core, 100, core("parent", &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_filter.Enum(), SeccompFilter: u32(7)})); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := Dir(&out, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "#7 (not in seccomp.img)") {
		t.Errorf("summary with a bad index:\n%s", out.String())
	}
}
