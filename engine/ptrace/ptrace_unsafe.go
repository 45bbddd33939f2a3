package ptrace

import (
	"errors"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The requests of this file pass pointers to the kernel.
// Preconditions: caller is on the tracer thread; tid is ptrace-stopped.

func ptracePtr(req, tid int, addr uintptr, data unsafe.Pointer) (uintptr, error) {
	var r uintptr
	err := retry(func() error {
		r1, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, uintptr(data), 0, 0)
		if e != 0 {
			return e
		}
		r = r1
		return nil
	})
	return r, ptraceError(req, tid, err)
}

// ptracePtrs is ptracePtr for requests whose addr is a pointer as well.
func ptracePtrs(req, tid int, addr, data unsafe.Pointer) (uintptr, error) {
	var r uintptr
	err := retry(func() error {
		r1, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), uintptr(addr), uintptr(data), 0, 0)
		if e != 0 {
			return e
		}
		r = r1
		return nil
	})
	return r, ptraceError(req, tid, err)
}

// getRegset reads regset typ into buf and returns the bytes the kernel
// filled (it shrinks iov_len to the regset's real size).
func getRegset(tid, typ int, buf []byte) ([]byte, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if _, err := ptracePtr(unix.PTRACE_GETREGSET, tid, uintptr(typ), unsafe.Pointer(&iov)); err != nil {
		return nil, err
	}
	return buf[:iov.Len], nil
}

func setRegset(tid, typ int, buf []byte) error {
	if len(buf) == 0 {
		return ptraceError(unix.PTRACE_SETREGSET, tid, unix.EINVAL)
	}
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, err := ptracePtr(unix.PTRACE_SETREGSET, tid, uintptr(typ), unsafe.Pointer(&iov))
	return err
}

// GetFPRegs reads the 512-byte fxsave area of tid (NT_PRFPREG).
func GetFPRegs(tid int) ([]byte, error) {
	return getRegset(tid, ntPRFPReg, make([]byte, FPRegsSize))
}

// SetFPRegs writes the 512-byte fxsave area of tid.
func SetFPRegs(tid int, b []byte) error {
	return setRegset(tid, ntPRFPReg, b)
}

// GetXState reads the whole XSAVE area of tid (NT_X86_XSTATE), in the
// standard (non-compacted) format, at the size the kernel uses for user
// copies; SetXState wants exactly that size back.
//
// The size is the same for every task of a boot (the regset's size is
// fixed when the kernel starts), so it is learnt from the first read, which
// takes a buffer of maxXStateSize; later reads take a buffer of that size
// and one word more (the kernel wants whole words), instead of 64 KiB each
// (a 50-thread dump allocated and zeroed 3 MiB for 2.5 KiB of state a
// thread). A read that fills that buffer would mean the size changed: it
// is read again the first way.
func GetXState(tid int) ([]byte, error) {
	if n := int(xstateSize.Load()); n > 0 {
		b, err := getRegset(tid, ntX86XState, make([]byte, n+8))
		if err != nil {
			return nil, err
		}
		if len(b) <= n {
			return b[:len(b):len(b)], nil
		}
	}
	// maxXStateLen, not the constant: a constant-size 64 KiB buffer that
	// does not escape lives on the goroutine's stack, which then grows to
	// 128 KiB (copied) and has all 64 KiB zeroed, 16 fresh pages touched
	// in every dump and restore; a heap buffer of that size comes from
	// fresh, already zero pages, of which the kernel touches what it fills.
	b, err := getRegset(tid, ntX86XState, make([]byte, maxXStateLen))
	if err != nil {
		return nil, err
	}
	xstateSize.Store(int64(len(b)))
	return append([]byte(nil), b...), nil
}

// maxXStateLen is maxXStateSize as a variable (GetXState).
var maxXStateLen = maxXStateSize

// xstateSize is the size of NT_X86_XSTATE that GetXState learnt.
var xstateSize atomic.Int64

// SetXState writes an XSAVE area read by GetXState.
func SetXState(tid int, b []byte) error {
	return setRegset(tid, ntX86XState, b)
}

// GetSigmask returns the blocked-signal mask of tid (bit n-1 = signal n).
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	_, err := ptracePtr(unix.PTRACE_GETSIGMASK, tid, 8, unsafe.Pointer(&m))
	return m, err
}

// SetSigmask sets the blocked-signal mask of tid (SIGKILL and SIGSTOP are
// dropped by the kernel).
func SetSigmask(tid int, mask uint64) error {
	_, err := ptracePtr(unix.PTRACE_SETSIGMASK, tid, 8, unsafe.Pointer(&mask))
	return err
}

// GetSiginfo returns the 128-byte siginfo of the signal that caused the
// current stop.
func GetSiginfo(tid int) ([]byte, error) {
	b := make([]byte, SiginfoSize)
	_, err := ptracePtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(&b[0]))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// SetSiginfo replaces the siginfo of the current signal-delivery-stop.
func SetSiginfo(tid int, b []byte) error {
	if len(b) != SiginfoSize {
		return ptraceError(unix.PTRACE_SETSIGINFO, tid, unix.EINVAL)
	}
	_, err := ptracePtr(unix.PTRACE_SETSIGINFO, tid, 0, unsafe.Pointer(&b[0]))
	return err
}

// PeekSiginfo returns every queued signal of tid without dequeuing it, each
// as a 128-byte siginfo: the thread's private queue, or with shared the
// process-wide queue.
func PeekSiginfo(tid int, shared bool) ([][]byte, error) {
	const batch = 32
	var out [][]byte
	buf := make([]byte, batch*SiginfoSize)
	args := peekSiginfoArgs{Nr: batch}
	if shared {
		args.Flags = peekSiginfoShared
	}
	for {
		n, err := ptracePtrs(unix.PTRACE_PEEKSIGINFO, tid, unsafe.Pointer(&args), unsafe.Pointer(&buf[0]))
		if err != nil {
			return nil, err
		}
		for i := 0; i < int(n); i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
		if int(n) < batch {
			return out, nil
		}
		args.Off += uint64(n)
	}
}

// GetRseqConfig returns the rseq registration of tid.
func GetRseqConfig(tid int) (RseqConfig, error) {
	var c RseqConfig
	_, err := ptracePtr(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return c, err
}

// SeccompFilters returns the classic-BPF programs of tid's seccomp filters,
// each as raw struct sock_filter instructions, in the order they were
// installed (index 0 is the oldest: checked on this kernel), which is the
// order to install them again. A task without filters yields none.
func SeccompFilters(tid int) ([][]byte, error) {
	var out [][]byte
	for i := 0; ; i++ {
		n, err := ptracePtr(unix.PTRACE_SECCOMP_GET_FILTER, tid, uintptr(i), nil)
		if err != nil {
			// ENOENT: index past the last filter. EINVAL: the task is
			// not in filter mode at all.
			if errors.Is(err, unix.ENOENT) || (i == 0 && errors.Is(err, unix.EINVAL)) {
				return out, nil
			}
			return nil, err
		}
		prog := make([]byte, int(n)*sockFilterSize)
		if n > 0 {
			if _, err := ptracePtr(unix.PTRACE_SECCOMP_GET_FILTER, tid, uintptr(i), unsafe.Pointer(&prog[0])); err != nil {
				return nil, err
			}
		}
		out = append(out, prog)
	}
}

// seccompMetadata is struct seccomp_metadata of <linux/ptrace.h>.
type seccompMetadata struct {
	FilterOff uint64
	Flags     uint64
}

// SeccompFilterFlags returns the flags of tid's seccomp filter i (in
// SeccompFilters' order, 0 the oldest) that the kernel keeps with the
// filter and reports (PTRACE_SECCOMP_GET_METADATA): SECCOMP_FILTER_FLAG_LOG
// only, on the kernels of today.
func SeccompFilterFlags(tid, i int) (uint64, error) {
	md := seccompMetadata{FilterOff: uint64(i)}
	if _, err := ptracePtr(unix.PTRACE_SECCOMP_GET_METADATA, tid, unsafe.Sizeof(md), unsafe.Pointer(&md)); err != nil {
		return 0, err
	}
	return md.Flags, nil
}
