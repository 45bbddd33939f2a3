package kernel

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/pagemap"
)

// Raw calls whose arguments are pointers to kernel ABI structures.

func ptraceSeize(pid int, opts int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, uintptr(opts), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptraceSetOptions(pid int, opts int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETOPTIONS, uintptr(pid), 0, uintptr(opts), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptraceInterrupt(pid int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_INTERRUPT, uintptr(pid), 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptraceGetRegset reads register set note of pid into buf and returns the
// length the kernel filled in.
func ptraceGetRegset(pid int, note int, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(pid), uintptr(note),
		uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(iov.Len), nil
}

func ptraceGetRseqConfig(pid int) (rseqConfig, int, error) {
	var cfg rseqConfig
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceGetRseqConfiguration, uintptr(pid),
		unsafe.Sizeof(cfg), uintptr(unsafe.Pointer(&cfg)), 0, 0)
	if e != 0 {
		return cfg, 0, e
	}
	return cfg, int(r), nil
}

func ptraceGetSigmask(pid int) (uint64, error) {
	var mask uint64
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceReqGetSigmask, uintptr(pid), 8, uintptr(unsafe.Pointer(&mask)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return mask, nil
}

// ptracePeekSiginfo returns how many queued siginfos (up to 4) pid has.
func ptracePeekSiginfo(pid int) (int, error) {
	args := peekSiginfoArgs{Nr: 4}
	var buf [4 * 128]byte
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, ptraceReqPeekSiginfo, uintptr(pid),
		uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// processVMRead reads len(b) bytes at addr of pid.
func processVMRead(pid int, addr uint64, b []byte) (int, error) {
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	return unix.ProcessVMReadv(pid, local, remote, 0)
}

// processVMWrite writes b at addr of pid.
func processVMWrite(pid int, addr uint64, b []byte) (int, error) {
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	return unix.ProcessVMWritev(pid, local, remote, 0)
}

// pagemapScanPresent runs PAGEMAP_SCAN over [start, end) of the pagemap
// file fd and returns the regions of present pages.
func pagemapScanPresent(fd int, start, end uint64) ([]pagemap.Region, error) {
	vec := make([]pagemap.Region, 8)
	n, _, err := pagemap.Scan(fd, start, end, vec,
		pagemap.Filter{Mask: pagemap.PageIsPresent, Return: pagemap.PageIsPresent})
	if err != nil {
		return nil, err
	}
	return vec[:n], nil
}

func uffdAPIHandshake(fd int, features uint64) (uffdioAPI, error) {
	api := uffdioAPI{API: uffdAPI, Features: features}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioAPIIoctl, uintptr(unsafe.Pointer(&api)))
	if e != 0 {
		return api, e
	}
	return api, nil
}

func uffdRegister(fd int, start, length, mode uint64) (uffdioRegister, error) {
	reg := uffdioRegister{Start: start, Len: length, Mode: mode}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uffdioRegisterIoctl, uintptr(unsafe.Pointer(&reg)))
	if e != 0 {
		return reg, e
	}
	return reg, nil
}

// prctlMMMapSizeQuery asks PR_SET_MM for the size of struct prctl_mm_map.
func prctlMMMapSizeQuery() (uint32, error) {
	var size uint32
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, prSetMM, prSetMMMapSize, uintptr(unsafe.Pointer(&size)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return size, nil
}

// cloneArgsBytes is the in-memory image of a clone_args for the child.
func cloneArgsBytes(a *cloneArgs) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(a)), unsafe.Sizeof(*a))
}

// sliceAddr is the address of b's first byte (for mmap'ed memory only,
// which the Go collector does not move).
func sliceAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
