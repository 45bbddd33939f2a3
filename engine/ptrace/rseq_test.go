package ptrace

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInjectKeepsRseqCs: the rseq_cs word of a thread stays as it was
// across injections (the kernel would clear it on our first resume, and
// with it the abort of a critical section the thread was stopped in).
func TestInjectKeepsRseqCs(t *testing.T) {
	requireRoot(t)
	pid := startSleep(t).Process.Pid
	tr := stoppedTracer(t, pid)
	err := tr.Do(func() error {
		cfg, err := GetRseqConfig(pid)
		if err != nil {
			return err
		}
		if cfg.RseqAbiPointer == 0 {
			t.Fatalf("sleep has no rseq registered (glibc registers it for every thread since 2.35)")
		}
		csAddr := uintptr(cfg.RseqAbiPointer) + rseqCsOffset
		in, err := NewInjector(pid)
		if err != nil {
			return err
		}
		cleanup, err := in.WithScratch(4096)
		if err != nil {
			return err
		}
		// A valid critical-section descriptor away from every RIP the
		// thread will have: struct rseq_cs {u32 version, u32 flags,
		// u64 start_ip, u64 post_commit_offset, u64 abort_ip}, and the
		// registered signature in the 4 bytes before abort_ip.
		code := in.Scratch + 2048
		abort := code + 64
		var sig [4]byte
		binary.LittleEndian.PutUint32(sig[:], cfg.Signature)
		if _, err := WriteMem(pid, abort-4, sig[:]); err != nil {
			return err
		}
		desc := make([]byte, 32)
		binary.LittleEndian.PutUint64(desc[8:], uint64(code))
		binary.LittleEndian.PutUint64(desc[16:], 16)
		binary.LittleEndian.PutUint64(desc[24:], uint64(abort))
		descAddr, err := in.PutBytes(desc)
		if err != nil {
			return err
		}
		var word [8]byte
		binary.LittleEndian.PutUint64(word[:], uint64(descAddr))
		if _, err := WriteMem(pid, csAddr, word[:]); err != nil {
			return err
		}
		for range 3 {
			if r, err := in.Syscall(unix.SYS_GETPID); err != nil || int(r) != pid {
				t.Errorf("getpid = %d, %v", r, err)
			}
		}
		if _, err := ReadMem(pid, csAddr, word[:]); err != nil {
			return err
		}
		if got := binary.LittleEndian.Uint64(word[:]); got != uint64(descAddr) {
			t.Errorf("rseq_cs after injections = %#x, want %#x", got, descAddr)
		}
		// Clear it again before the scratch holding the descriptor goes.
		binary.LittleEndian.PutUint64(word[:], 0)
		if _, err := WriteMem(pid, csAddr, word[:]); err != nil {
			return err
		}
		if err := cleanup(); err != nil {
			return err
		}
		return Detach(pid, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, 'S')
}
