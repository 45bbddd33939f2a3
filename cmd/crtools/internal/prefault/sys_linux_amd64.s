#include "textflag.h"

// func rawSyscall6(trap, a1, a2, a3, a4, a5, a6 uintptr) uintptr
//
// The system call's raw result: a negative errno on failure. No
// entersyscall: the calls made here (openat, read and close of a procfs
// file, madvise; mmap, mremap and pread64 for hugeText, text.go) do not
// block for long.
TEXT ·rawSyscall6(SB),NOSPLIT,$0-64
	MOVQ	a1+8(FP), DI
	MOVQ	a2+16(FP), SI
	MOVQ	a3+24(FP), DX
	MOVQ	a4+32(FP), R10
	MOVQ	a5+40(FP), R8
	MOVQ	a6+48(FP), R9
	MOVQ	trap+0(FP), AX
	SYSCALL
	MOVQ	AX, ret+56(FP)
	RET
