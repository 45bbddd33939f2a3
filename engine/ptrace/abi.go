package ptrace

// Kernel ABI structs used with ptrace. Each has a size test in
// abi_unsafe_test.go.

// RseqConfig is struct ptrace_rseq_configuration
// (PTRACE_GET_RSEQ_CONFIGURATION).
type RseqConfig struct {
	RseqAbiPointer uint64 // address of the registered struct rseq, 0 if none
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	_              uint32
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// peekSiginfoShared is PTRACE_PEEKSIGINFO_SHARED: read the process-wide
// (shared) queue instead of the thread's own.
const peekSiginfoShared = 1

// SiginfoSize is the size of a siginfo_t in bytes.
const SiginfoSize = 128

// FPRegsSize is the size of the legacy fxsave area (struct
// user_i387_struct, NT_PRFPREG).
const FPRegsSize = 512

// sockFilterSize is the size of a classic BPF instruction (struct
// sock_filter), the unit of PTRACE_SECCOMP_GET_FILTER.
const sockFilterSize = 8

// ntPRFPReg and ntX86XState are the regset types of PTRACE_GETREGSET.
const (
	ntPRFPReg   = 2
	ntX86XState = 0x202
)

// maxXStateSize bounds the xstate buffer we offer the kernel; it shrinks
// iov_len to the real size (fpu_user_cfg.max_size, a few KiB even with AMX
// tile data at 8 KiB+).
const maxXStateSize = 64 << 10
