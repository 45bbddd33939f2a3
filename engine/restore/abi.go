package restore

import "encoding/binary"

// Kernel ABI structures that crtools copies into a puppet's scratch area
// before an injected syscall reads them. They are encoded field by field
// with explicit little-endian offsets (x86-64 layout) instead of being cast
// from Go structs, so no unsafe is needed; abi_test.go checks the sizes
// against the kernel's.

var le = binary.LittleEndian

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
	SetTid     uint64 // address of a pid_t array in the puppet
	SetTidSize uint64
	Cgroup     uint64
}

const cloneArgsSize = 88

func (c *cloneArgs) bytes() []byte {
	b := make([]byte, cloneArgsSize)
	for i, v := range []uint64{c.Flags, c.Pidfd, c.ChildTid, c.ParentTid, c.ExitSignal,
		c.Stack, c.StackSize, c.TLS, c.SetTid, c.SetTidSize, c.Cgroup} {
		le.PutUint64(b[8*i:], v)
	}
	return b
}

// kernelSigaction is the x86-64 struct sigaction the rt_sigaction syscall
// takes (handler, flags, restorer, 8-byte mask: 32 bytes).
type kernelSigaction struct {
	Handler, Flags, Restorer, Mask uint64
}

const kernelSigactionSize = 32

func (s *kernelSigaction) bytes() []byte {
	b := make([]byte, kernelSigactionSize)
	le.PutUint64(b[0:], s.Handler)
	le.PutUint64(b[8:], s.Flags)
	le.PutUint64(b[16:], s.Restorer)
	le.PutUint64(b[24:], s.Mask)
	return b
}

// stackT is stack_t: void *ss_sp; int ss_flags; (4 bytes padding) size_t ss_size.
type stackT struct {
	Sp    uint64
	Flags int32
	Size  uint64
}

const stackTSize = 24

func (s *stackT) bytes() []byte {
	b := make([]byte, stackTSize)
	le.PutUint64(b[0:], s.Sp)
	le.PutUint32(b[8:], uint32(s.Flags))
	le.PutUint64(b[16:], s.Size)
	return b
}

// itimerval is struct itimerval: interval then value, each a timeval.
type itimerval struct {
	IntervalSec, IntervalUsec, ValueSec, ValueUsec int64
}

const itimervalSize = 32

func (t *itimerval) bytes() []byte {
	b := make([]byte, itimervalSize)
	le.PutUint64(b[0:], uint64(t.IntervalSec))
	le.PutUint64(b[8:], uint64(t.IntervalUsec))
	le.PutUint64(b[16:], uint64(t.ValueSec))
	le.PutUint64(b[24:], uint64(t.ValueUsec))
	return b
}

// itimerspec is struct itimerspec: interval then value, each a timespec.
type itimerspec struct {
	IntervalSec, IntervalNsec, ValueSec, ValueNsec int64
}

const itimerspecSize = 32

func (t *itimerspec) bytes() []byte {
	b := make([]byte, itimerspecSize)
	le.PutUint64(b[0:], uint64(t.IntervalSec))
	le.PutUint64(b[8:], uint64(t.IntervalNsec))
	le.PutUint64(b[16:], uint64(t.ValueSec))
	le.PutUint64(b[24:], uint64(t.ValueNsec))
	return b
}

// sigevent is struct sigevent (64 bytes): sigev_value, sigev_signo,
// sigev_notify, then a union whose first member is the thread id for
// SIGEV_THREAD_ID.
type sigevent struct {
	Value  uint64
	Signo  int32
	Notify int32
	Tid    int32
}

const sigeventSize = 64

func (s *sigevent) bytes() []byte {
	b := make([]byte, sigeventSize)
	le.PutUint64(b[0:], s.Value)
	le.PutUint32(b[8:], uint32(s.Signo))
	le.PutUint32(b[12:], uint32(s.Notify))
	le.PutUint32(b[16:], uint32(s.Tid))
	return b
}

// prctlMMMap is struct prctl_mm_map for prctl(PR_SET_MM, PR_SET_MM_MAP).
type prctlMMMap struct {
	StartCode, EndCode, StartData, EndData uint64
	StartBrk, Brk, StartStack              uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd     uint64
	Auxv                                   uint64 // address of the auxv array in the puppet
	AuxvSize                               uint32 // in bytes
	ExeFd                                  uint32
}

const prctlMMMapSize = 104

func (m *prctlMMMap) bytes() []byte {
	b := make([]byte, prctlMMMapSize)
	for i, v := range []uint64{m.StartCode, m.EndCode, m.StartData, m.EndData, m.StartBrk, m.Brk,
		m.StartStack, m.ArgStart, m.ArgEnd, m.EnvStart, m.EnvEnd, m.Auxv} {
		le.PutUint64(b[8*i:], v)
	}
	le.PutUint32(b[96:], m.AuxvSize)
	le.PutUint32(b[100:], m.ExeFd)
	return b
}

// iovec is struct iovec.
type iovec struct {
	Base, Len uint64
}

const iovecSize = 16

func putIovecs(iov []iovec) []byte {
	b := make([]byte, len(iov)*iovecSize)
	for i, v := range iov {
		le.PutUint64(b[16*i:], v.Base)
		le.PutUint64(b[16*i+8:], v.Len)
	}
	return b
}

// capHeader and capData are struct __user_cap_header_struct and two
// __user_cap_data_struct (version 3, 64-bit capability sets).
const (
	linuxCapabilityVersion3 = 0x20080522
	capHeaderSize           = 8
	capDataSize             = 24
)

func capBytes(pid int32, eff, prm, inh uint64) []byte {
	b := make([]byte, capHeaderSize+capDataSize)
	le.PutUint32(b[0:], linuxCapabilityVersion3)
	le.PutUint32(b[4:], uint32(pid))
	d := b[capHeaderSize:]
	le.PutUint32(d[0:], uint32(eff))
	le.PutUint32(d[4:], uint32(prm))
	le.PutUint32(d[8:], uint32(inh))
	le.PutUint32(d[12:], uint32(eff>>32))
	le.PutUint32(d[16:], uint32(prm>>32))
	le.PutUint32(d[20:], uint32(inh>>32))
	return b
}

// robustListHeadSize is sizeof(struct robust_list_head) on x86-64, the only
// length set_robust_list accepts.
const robustListHeadSize = 24
