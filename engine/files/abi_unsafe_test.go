package files

import (
	"testing"
	"unsafe"
)

// TestFOwnerExSize: struct f_owner_ex is two ints (OwnerTIDArg writes it
// by hand for the puppets).
func TestFOwnerExSize(t *testing.T) {
	if n := unsafe.Sizeof(fOwnerEx{}); n != 8 || len(OwnerTIDArg(1)) != int(n) {
		t.Errorf("sizeof(struct f_owner_ex) = %d, OwnerTIDArg gives %d bytes, want 8", n, len(OwnerTIDArg(1)))
	}
}
