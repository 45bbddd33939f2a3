package restore

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
)

// TestThreadSeccompOf reads a thread's chain from images, CRIU's layout
// (the thread's index its oldest filter, prev the next newer), and
// refuses hostile ones.
func TestThreadSeccompOf(t *testing.T) {
	u32 := proto.Uint32
	prog := func(n int) []byte { return make([]byte, 8*n) }
	good := []*pb.SeccompFilter{
		{Filter: prog(1), Flags: u32(3)},               // newest
		{Filter: prog(2), Prev: u32(0), Flags: u32(1)}, // oldest
	}
	filter := func(i uint32) *pb.ThreadCoreEntry {
		return &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_filter.Enum(), SeccompFilter: u32(i)}
	}
	s, err := threadSeccompOf(filter(1), good)
	if err != nil || len(s.filters) != 2 || len(s.filters[0].prog) != 16 || s.filters[1].flags != 3 || !s.tsync() || s.strict {
		t.Fatalf("good chain: %+v, %v", s, err)
	}
	if s, err := threadSeccompOf(&pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_strict.Enum()}, nil); err != nil || !s.strict {
		t.Errorf("strict: %+v, %v", s, err)
	}
	if s, err := threadSeccompOf(&pb.ThreadCoreEntry{}, nil); err != nil || s != nil {
		t.Errorf("none: %+v, %v", s, err)
	}
	for _, c := range []struct {
		name    string
		tc      *pb.ThreadCoreEntry
		filters []*pb.SeccompFilter
		want    string
	}{
		{"index out of range", filter(2), good, "not in seccomp.img"},
		{"no index", &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode_filter.Enum()}, good, "without a filter"},
		{"loop", filter(0), []*pb.SeccompFilter{{Filter: prog(1), Prev: u32(1)}, {Filter: prog(1), Prev: u32(0)}}, "loop"},
		{"prev out of range", filter(0), []*pb.SeccompFilter{{Filter: prog(1), Prev: u32(9)}}, "not in seccomp.img"},
		{"torn program", filter(0), []*pb.SeccompFilter{{Filter: make([]byte, 12)}}, "BPF instructions"},
		{"empty program", filter(0), []*pb.SeccompFilter{{}}, "BPF instructions"},
		{"too long", filter(0), []*pb.SeccompFilter{{Filter: prog(4097)}}, "BPF instructions"},
		{"listener flag", filter(0), []*pb.SeccompFilter{{Filter: prog(1), Flags: u32(8)}}, "flags 0x8"},
		{"unknown mode", &pb.ThreadCoreEntry{SeccompMode: pb.SeccompMode(7).Enum()}, nil, "unknown"},
	} {
		if _, err := threadSeccompOf(c.tc, c.filters); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
