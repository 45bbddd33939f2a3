// Package kernel probes, by trying them, the kernel features the engine
// relies on; `crtools check` prints the outcome.
//
// Every probe really uses its feature: ptrace probes seize a throwaway
// child, the syscall-level probes (clone3 with set_tid, arch_prctl of the
// vDSO) are injected into that child, the socket probes open sockets, and
// the namespace probes start a child in each new namespace. Nothing of
// crtools' own process state is changed, except for short-lived file
// descriptors and one small mapping (the userfaultfd probe).
//
// The throwaway child is a tiny static x86-64 program built in memory (see
// child.go) and executed from a memfd: it has one thread, a known address
// space and a few instruction sequences to run injected syscalls from, and
// it needs neither a compiler nor a file on disk.
//
// Thread rule: Check runs every probe on one goroutine locked to its OS
// thread, because ptrace requests must come from the thread that seized
// the child. The thread is unlocked at the end, once the child is dead and
// reaped (no ptrace state is left on it).
package kernel
