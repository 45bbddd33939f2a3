package restore

import (
	"reflect"
	"testing"

	"github.com/crtools/crtools/engine/image/pb"
)

func TestMadviseRuns(t *testing.T) {
	const nohuge, dontfork = 15, 10
	vma := func(start, end uint64, madv uint64) vmaPlan {
		return vmaPlan{e: &pb.VmaEntry{Start: u64(start), End: u64(end), Madv: u64(madv)}}
	}
	plans := []vmaPlan{
		// Thread stacks: guard page, stack, guard page, stack, all
		// back to back with MADV_NOHUGEPAGE: one run.
		vma(0x1000, 0x2000, 1<<nohuge),
		vma(0x2000, 0x9000, 1<<nohuge|1<<dontfork),
		vma(0x9000, 0xa000, 1<<nohuge),
		vma(0xa000, 0x10000, 1<<nohuge),
		// A VMA without flags ends nothing of the next one's, a gap
		// does.
		vma(0x10000, 0x11000, 0),
		vma(0x12000, 0x13000, 1<<nohuge),
		vma(0x13000, 0x14000, 1<<dontfork),
	}
	want := []madviseRun{
		{0x1000, 0x10000, nohuge},
		{0x2000, 0x9000, dontfork},
		{0x12000, 0x13000, nohuge},
		{0x13000, 0x14000, dontfork},
	}
	if got := madviseRuns(plans); !reflect.DeepEqual(got, want) {
		t.Errorf("madviseRuns = %#v, want %#v", got, want)
	}
}
