package restore

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
)

// TestSysVAttachments: the SysV VMAs of an image group into whole
// attachments (a head at pgoff 0, then the parts that follow it), each
// writable if a part is; a part without its head is refused.
func TestSysVAttachments(t *testing.T) {
	vma := func(start, end, pgoff, shmid uint64, prot uint32) *pb.VmaEntry {
		return &pb.VmaEntry{Start: proto.Uint64(start), End: proto.Uint64(end), Pgoff: proto.Uint64(pgoff), Shmid: proto.Uint64(shmid),
			Prot: proto.Uint32(prot), Status: proto.Uint32(vmaAreaRegular | vmaAreaSysvipc)}
	}
	anon := &pb.VmaEntry{Start: proto.Uint64(0x9000), End: proto.Uint64(0xa000), Status: proto.Uint32(vmaAreaRegular | vmaAnonPrivate)}
	atts, err := sysvAttachments([]*pb.VmaEntry{
		anon,
		vma(0x10000, 0x13000, 0, 7, 3), vma(0x13000, 0x14000, 0x3000, 7, 1), // one attachment, split
		vma(0x14000, 0x15000, 0, 7, 1), // the same segment again, read-only
		vma(0x20000, 0x21000, 0, 8, 0), // another, PROT_NONE
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		start, end uint64
		writable   bool
	}{{0x10000, 0x14000, true}, {0x14000, 0x15000, false}, {0x20000, 0x21000, false}} {
		a := atts[c.start]
		if a == nil || a.end != c.end || a.writable != c.writable {
			t.Errorf("attachment at %#x: %+v, want end %#x writable %v", c.start, a, c.end, c.writable)
		}
	}
	if len(atts) != 3 {
		t.Errorf("%d attachments, want 3", len(atts))
	}
	_, err = sysvAttachments([]*pb.VmaEntry{vma(0x13000, 0x14000, 0x3000, 7, 1)})
	if err == nil || !strings.Contains(err.Error(), "whole segments only") {
		t.Errorf("part without its head: %v", err)
	}
}
