#include "textflag.h"

// func spawnHolder(stackTop uintptr, rfd int, set, old unsafe.Pointer) int
//
// Blocks every signal in this thread, clones a process that shares the
// address space (CLONE_VM, no exit signal: the kernel gives it SIGCHLD
// when it re-parents it), restores the signal mask and returns the
// clone's PID or a negative errno. The clone runs holder below on
// stackTop, with every signal blocked. No Go code runs between the two
// mask changes: an assembly function is not preempted.
TEXT ·spawnHolder(SB),NOSPLIT,$0-40
	MOVQ	rfd+8(FP), R12
	// rt_sigprocmask(SIG_SETMASK, set, old, 8)
	MOVQ	$14, AX
	MOVQ	$2, DI
	MOVQ	set+16(FP), SI
	MOVQ	old+24(FP), DX
	MOVQ	$8, R10
	SYSCALL
	CMPQ	AX, $0
	JNE	done
	// clone(CLONE_VM, stackTop, 0, 0, 0)
	MOVQ	$56, AX
	MOVQ	$0x100, DI
	MOVQ	stackTop+0(FP), SI
	MOVQ	$0, DX
	MOVQ	$0, R10
	MOVQ	$0, R8
	SYSCALL
	CMPQ	AX, $0
	JEQ	holder
	MOVQ	AX, R13
	// rt_sigprocmask(SIG_SETMASK, old, nil, 8)
	MOVQ	$14, AX
	MOVQ	$2, DI
	MOVQ	old+24(FP), SI
	MOVQ	$0, DX
	MOVQ	$8, R10
	SYSCALL
	MOVQ	R13, AX
done:
	MOVQ	AX, ret+32(FP)
	RET

// The holder: rfd in R12, SP on its own stack.
holder:
	// It keeps crtools' scheduling policy. At SCHED_IDLE it ran, and
	// unmapped the address space, only when a CPU had nothing else to do:
	// on a busy host (a spinning process on each CPU) it outlived crtools
	// by 0.1-1 s, 2-3 s at load 4, holding its ~20 MiB all along.
	// close_range(0, rfd-1, 0); close_range(rfd+1, ~0, 0). A kernel
	// without close_range: exit at once, holding nothing for long.
	MOVQ	$436, AX
	MOVQ	$0, DI
	MOVQ	R12, SI
	DECQ	SI
	MOVQ	$0, DX
	SYSCALL
	CMPQ	AX, $0
	JNE	exit
	MOVQ	$436, AX
	MOVQ	R12, DI
	INCQ	DI
	MOVL	$0xffffffff, SI
	MOVQ	$0, DX
	SYSCALL
	CMPQ	AX, $0
	JNE	exit
wait:
	// read(rfd, SP-16, 1) until the end of the pipe (or an error).
	MOVQ	$0, AX
	MOVQ	R12, DI
	LEAQ	-16(SP), SI
	MOVQ	$1, DX
	SYSCALL
	CMPQ	AX, $-4 // EINTR
	JEQ	wait
exit:
	// exit(0)
	MOVQ	$60, AX
	MOVQ	$0, DI
	SYSCALL
	JMP	exit
