package image_test

import (
	"testing"

	"github.com/crtools/crtools/engine/image/imagetest"
)

// TestCRIUFixtureVTMatchesReflection: on every image of the CRIU 4.2
// fixture, engine/image's generated decoder and encoder agree with
// protobuf-go's reflection-based ones (imagetest.CheckEncodings).
func TestCRIUFixtureVTMatchesReflection(t *testing.T) {
	files, entries := imagetest.CheckEncodings(t, "testdata/criu-4.2-tree", false)
	if files < 20 || entries < 40 {
		t.Fatalf("checked only %d files, %d entries", files, entries)
	}
	t.Logf("%d files, %d entries", files, entries)
}
