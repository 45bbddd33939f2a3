package ptrace

import (
	"encoding/binary"
	"testing"
)

// TestSigFrameLayout checks SigFrame against the kernel's rt_sigframe
// (x86-64): sigcontext at 48 (rip at 48+128, rsp at 48+120), fpstate
// pointer at 48+184, mask at 304, the fpx_sw words and magic2, and the
// restart of an interrupted syscall.
func TestSigFrameLayout(t *testing.T) {
	xs := make([]byte, 2432)
	binary.LittleEndian.PutUint64(xs[464:], 0xe7) // XCR0, as NT_X86_XSTATE has it
	r := Regs{Rip: 0x1002, Rsp: 0x7000, Rax: uint64(0xfffffffffffffdfe), Orig_rax: 34, Cs: 0x33, Ss: 0x2b} // pause, -ERESTARTNOHAND
	const at = 0x10040
	f, err := SigFrame(at, r, 1<<11, xs)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(f) != SigFrameSize(len(xs)) || len(f)%64 != 0 || len(f) < 320+2432+4 {
		t.Fatalf("frame of %d bytes, SigFrameSize %d", len(f), SigFrameSize(len(xs)))
	}
	for _, c := range []struct {
		name      string
		off       int
		got, want uint64
	}{
		{"uc_flags", 8, le.Uint64(f[8:]), 7},
		{"rip (restarted)", 48 + 128, le.Uint64(f[48+128:]), 0x1000},
		{"rax (restarted)", 48 + 104, le.Uint64(f[48+104:]), 34},
		{"rsp", 48 + 120, le.Uint64(f[48+120:]), 0x7000},
		{"fpstate", 48 + 184, le.Uint64(f[48+184:]), at + 320},
		{"mask", 304, le.Uint64(f[304:]), 1 << 11},
		{"magic1", 320 + 464, uint64(le.Uint32(f[320+464:])), 0x46505853},
		{"extended_size", 320 + 468, uint64(le.Uint32(f[320+468:])), 2436},
		{"xfeatures", 320 + 472, le.Uint64(f[320+472:]), 0xe7},
		{"xstate_size", 320 + 480, uint64(le.Uint32(f[320+480:])), 2432},
		{"magic2", 320 + 2432, uint64(le.Uint32(f[320+2432:])), 0x46505845},
	} {
		if c.got != c.want {
			t.Errorf("%s at %d = %#x, want %#x", c.name, c.off, c.got, c.want)
		}
	}
	if _, err := SigFrame(at+8, r, 0, xs); err == nil {
		t.Errorf("SigFrame at an address not 64-byte aligned: no error")
	}
}
