// Package harness builds and runs the workloads of crtools' end-to-end
// tests and checks them with the ready/verify protocol.
//
// A workload is a small program (C in test/workloads/*.c with crt.h, or Go
// in test/workloads/gowork) that sets up some kernel state, reports ready,
// keeps working, and on SIGUSR1 checks every piece of that state and writes
// the outcome into a result file. The protocol, through the environment:
//
//	CRT_READY=path   the workload writes its pid there (atomically) once its
//	                 state is set up.
//	CRT_RESULT=path  on SIGUSR1 the workload writes "PASS token=T progress=N"
//	                 or "FAIL <reason>" there (write to path.tmp, rename).
//	                 A result file rather than stdout, because a restored
//	                 process keeps writing to the descriptors it had.
//	CRT_STARTS=path  the workload appends one line "pid token" when it starts.
//	                 A program that was re-run rather than restored appends a
//	                 second line.
//
// On SIGUSR2 the workload verifies, writes the result and exits with 0 on
// PASS or 1 on FAIL (to test a restore that waits for its task).
//
// Workload.Verify proves both halves of a restore: "state intact" (the
// workload's own checks pass) and "continued, not restarted" (exactly one
// start line, the random token drawn at start unchanged, and the progress
// counter strictly larger than at the previous verify).
//
// Skips: RequireRoot and RequireKernel skip outside CI and fail inside it
// (the CI environment variable is set), where we run as root on a known
// kernel and nothing may skip silently.
package harness
