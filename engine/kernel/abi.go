package kernel

// Kernel ABI structures and constants the probes use that
// golang.org/x/sys/unix does not provide (or not on every version).
// Sizes are checked in abi_test.go.

// uffdioAPI is struct uffdio_api.
type uffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// uffdioRegister is struct uffdio_register.
type uffdioRegister struct {
	Start  uint64
	Len    uint64
	Mode   uint64
	Ioctls uint64
}

const (
	uffdAPI                 = 0xAA
	uffdioAPIIoctl          = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegisterIoctl     = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdUserModeOnly        = 1
	uffdFeatureWPUnpopul    = 1 << 13
	uffdFeatureWPAsync      = 1 << 15
	uffdioRegisterModeWP    = 1 << 1
	uffdioWriteprotectIoctl = 6 // bit of UFFDIO_WRITEPROTECT in ioctls
)

// cloneArgs is struct clone_args (CLONE_ARGS_SIZE_VER2, 88 bytes).
type cloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64
	SetTidSize uint64
	Cgroup     uint64
}

// rseqConfig is struct ptrace_rseq_configuration.
type rseqConfig struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

const (
	ptraceGetRseqConfiguration = 0x420f
	ptraceReqGetSigmask        = 0x420a
	ptraceReqPeekSiginfo       = 0x4209
	ptraceEventStop            = 128
	ntX86Xstate                = 0x202
	archMapVdso64              = 0x2003
	prSetMM                    = 35
	prSetMMMapSize             = 15
	prctlMMMapSize             = 104 // sizeof(struct prctl_mm_map)
	kcmpVM                     = 1
	kcmpFile                   = 0
)

// tcpSendQueue is TCP_SEND_QUEUE, a value for TCP_REPAIR_QUEUE.
const tcpSendQueue = 2
