package ptrace

import (
	"encoding/binary"
	"fmt"
)

// A cured batch (Injector.CureSig) ends not in an int3 but in
//
//	done:	mov  rbp, rax        ; the last result, for the tracer
//		mov  eax, 200        ; tkill(r14 = the thread, r15 = CureSig)
//		mov  rdi, r14
//		mov  rsi, r15
//		syscall
//	end:	mov  eax, 15         ; rt_sigreturn, rsp = the thread's frame + 8
//		syscall
//
// The tracer stops the thread at CureSig's signal-delivery-stop at end and
// never lets it run the rt_sigreturn (End puts the registers back). Were
// the tracer to die at any moment (a crtools SIGKILLed mid-dump: the
// kernel detaches its tracees, exit_ptrace), the thread would run on
// untraced: its batch to the end, then CureSig, which it neither catches
// nor blocks and whose default action is to ignore it (a stop not yet
// waited for hands its signal to the thread on detach: ignored too), then
// the rt_sigreturn from the frame SigFrame wrote, which holds its original
// registers, signal mask and FPU state: it carries on as if never
// stopped. An int3 would kill it instead (SIGTRAP, forced), with the
// registers of the injection.
var curedTail = []byte{
	0x48, 0x89, 0xc5, // mov rbp, rax
	0xb8, 0xc8, 0x00, 0x00, 0x00, // mov eax, 200 (tkill)
	0x4c, 0x89, 0xf7, // mov rdi, r14
	0x4c, 0x89, 0xfe, // mov rsi, r15
	0x0f, 0x05, // syscall
	0xb8, 0x0f, 0x00, 0x00, 0x00, // end: mov eax, 15 (rt_sigreturn)
	0x0f, 0x05, // syscall
}

// curedEndOff is the offset of end in curedTail: where the thread stops.
const curedEndOff = 16

// curedBatchCode is batchCode with curedTail in place of its int3 (the
// jumps to done stay valid: done is where the int3 was).
var curedBatchCode = append(append([]byte{}, batchCode[:len(batchCode)-1]...), curedTail...)

// rt_sigframe layout (x86-64, arch/x86/include/asm/sigframe.h and uapi
// sigcontext.h): pretcode, then struct ucontext: uc_flags, uc_link,
// uc_stack (ss_sp, ss_flags, ss_size), uc_mcontext (struct sigcontext, 256
// bytes), uc_sigmask. rt_sigreturn finds the frame at rsp - 8.
const (
	sigFrameUcFlags  = 8
	sigFrameUcStack  = 24
	sigFrameMcontext = 48
	sigFrameSigmask  = 304
	sigFrameSize     = 312
	// sigFrameFP is where the fpstate starts: XRSTOR wants it 64-byte
	// aligned (a frame is placed 64-byte aligned).
	sigFrameFP = 320

	// uc_flags: UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
	// what the kernel's own 64-bit frames carry.
	ucFlags = 1 | 2 | 4
	// fpx_sw_bytes magic words (uapi sigcontext.h).
	fpXstateMagic1 = 0x46505853
	fpXstateMagic2 = 0x46505845
	// swReservedOff is where struct _fpx_sw_bytes sits in the fxsave
	// area (its sw_reserved); the NT_X86_XSTATE regset has XCR0 there.
	swReservedOff = 464
)

// SigFrameSize is the room SigFrame needs for an NT_X86_XSTATE buffer of
// xstateLen bytes, a multiple of 64.
func SigFrameSize(xstateLen int) int { return (sigFrameFP + xstateLen + 4 + 63) &^ 63 }

// SigFrame returns an rt_sigframe for address at (64-byte aligned) that
// makes rt_sigreturn, with rsp = at + 8, put back regs, mask and the FPU
// state xstate (as PTRACE_GETREGSET NT_X86_XSTATE returned it), for a
// thread stopped at regs. A thread stopped on its way out of an
// interrupted syscall (orig_rax >= 0, rax one of -ERESTART*) gets the
// registers the kernel would give it on resuming without a handler: the
// syscall again (rip - 2, rax = orig_rax). rt_sigreturn sets orig_rax to
// -1, so that fix-up would not happen after it; and for
// -ERESTART_RESTARTBLOCK it restarts the original call (a sleep or poll
// waits its whole timeout again) rather than restart_syscall, which
// rt_sigreturn turns into EINTR. The alternate signal stack is left as it
// is: uc_stack has an invalid ss_flags, which restore_altstack ignores
// (EINVAL).
func SigFrame(at uintptr, regs Regs, mask uint64, xstate []byte) ([]byte, error) {
	if at&63 != 0 {
		return nil, fmt.Errorf("signal frame at %#x: not 64-byte aligned", at)
	}
	if len(xstate) < 576 {
		return nil, fmt.Errorf("signal frame: FPU state of %d bytes, want an XSAVE area", len(xstate))
	}
	r := regs
	if int64(r.Orig_rax) >= 0 {
		switch int64(r.Rax) {
		case -512, -513, -514, -516: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK
			r.Rax = r.Orig_rax
			r.Rip -= 2
		}
	}
	le := binary.LittleEndian
	f := make([]byte, SigFrameSize(len(xstate)))
	le.PutUint64(f[sigFrameUcFlags:], ucFlags)
	le.PutUint32(f[sigFrameUcStack+8:], 0x7ff0) // ss_flags: not a mode
	sc := f[sigFrameMcontext:]
	for i, v := range []uint64{r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15,
		r.Rdi, r.Rsi, r.Rbp, r.Rbx, r.Rdx, r.Rax, r.Rcx, r.Rsp, r.Rip, r.Eflags} {
		le.PutUint64(sc[8*i:], v)
	}
	le.PutUint16(sc[144:], uint16(r.Cs))
	le.PutUint16(sc[150:], uint16(r.Ss))
	le.PutUint64(sc[184:], uint64(at)+sigFrameFP) // fpstate
	le.PutUint64(f[sigFrameSigmask:], mask)
	fp := f[sigFrameFP:]
	copy(fp, xstate)
	xcr0 := le.Uint64(xstate[swReservedOff:])
	le.PutUint32(fp[swReservedOff:], fpXstateMagic1)
	le.PutUint32(fp[swReservedOff+4:], uint32(len(xstate)+4)) // extended_size
	le.PutUint64(fp[swReservedOff+8:], xcr0)                  // xfeatures
	le.PutUint32(fp[swReservedOff+16:], uint32(len(xstate)))  // xstate_size
	clear(fp[swReservedOff+20 : 512])
	le.PutUint32(fp[len(xstate):], fpXstateMagic2)
	return f, nil
}
