package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/pagemap"
)

var features = []Feature{
	{Name: "ptrace-seize", NeededBy: "freezing tasks (dump), driving puppets (restore), exec", Required: true, Mainline: true, MinKernel: "3.4", probe: probeSeize},
	{Name: "ptrace-xstate", NeededBy: "FPU/SSE/AVX registers (PTRACE_GETREGSET NT_X86_XSTATE)", Required: true, Mainline: true, MinKernel: "3.0", probe: probeXstate},
	{Name: "ptrace-sigmask", NeededBy: "blocked masks and pending signals (PTRACE_GETSIGMASK, PEEKSIGINFO)", Required: true, Mainline: true, MinKernel: "3.11", probe: probeSigmask},
	{Name: "ptrace-rseq", NeededBy: "rseq areas, which glibc registers in every thread (PTRACE_GET_RSEQ_CONFIGURATION)", Required: true, Mainline: true, MinKernel: "5.13", probe: probeRseq},
	{Name: "process_vm_readv", NeededBy: "copying memory pages (dump)", Required: true, Mainline: true, MinKernel: "3.2", probe: probeVMRead},
	{Name: "process_vm_writev", NeededBy: "filling memory (restore)", Required: true, Mainline: true, MinKernel: "3.2", probe: probeVMWrite},
	{Name: "pidfd_open", NeededBy: "stable handles on tasks", Required: true, Mainline: true, MinKernel: "5.3", probe: probePidfdOpen},
	{Name: "pidfd_getfd", NeededBy: "copying a task's files (dump), handing files to puppets (restore)", Required: true, Mainline: true, MinKernel: "5.6", probe: probePidfdGetfd},
	{Name: "clone3-set_tid", NeededBy: "restoring tasks and threads with their PIDs", Required: true, Mainline: true, MinKernel: "5.5", probe: probeClone3},
	{Name: "map_files", NeededBy: "files behind mappings, deleted ones too (/proc/PID/map_files)", Required: true, Mainline: true, MinKernel: "3.3", probe: probeMapFiles},
	{Name: "pagemap", NeededBy: "finding the pages worth saving (/proc/PID/pagemap)", Required: true, Mainline: true, MinKernel: "2.6.25", probe: probePagemap},
	{Name: "pagemap-scan", NeededBy: "fast page scan (PAGEMAP_SCAN; without it pagemap is read)", Required: false, Mainline: true, MinKernel: "6.7", probe: probePagemapScan},
	{Name: "uffd-wp-async", NeededBy: "tracking written pages (userfaultfd write-protect, async mode)", Required: false, Mainline: true, MinKernel: "6.7", probe: probeUffdWP},
	{Name: "kcmp", NeededBy: "telling shared files, memory and fs apart", Required: true, Mainline: true, MinKernel: "3.5", probe: probeKcmp},
	{Name: "memfd", NeededBy: "memfd mappings and files", Required: true, Mainline: true, MinKernel: "3.17", probe: probeMemfd},
	{Name: "vdso-map", NeededBy: "putting the vDSO back where it was (arch_prctl ARCH_MAP_VDSO_64, restore)", Required: true, Mainline: true, MinKernel: "4.9", probe: probeVdsoMap},
	{Name: "prctl-mm-map", NeededBy: "brk, arg/env ranges, auxv and exe file (PR_SET_MM_MAP, restore)", Required: true, Mainline: true, MinKernel: "3.18", probe: probeMMMap},
	{Name: "proc-timers", NeededBy: "POSIX timers (/proc/PID/timers, dump)", Required: true, Mainline: true, MinKernel: "3.10", probe: probeProcTimers},
	{Name: "close_range", NeededBy: "closing crtools' descriptors in puppets (restore)", Required: true, Mainline: true, MinKernel: "5.9", probe: probeCloseRange},
	{Name: "sock_diag-unix", NeededBy: "unix sockets", Required: true, Mainline: true, MinKernel: "3.3", probe: probeDiag(unix.AF_UNIX)},
	{Name: "sock_diag-inet", NeededBy: "TCP and UDP sockets", Required: false, Mainline: true, MinKernel: "3.3", probe: probeDiag(unix.AF_INET)},
	{Name: "sock_diag-packet", NeededBy: "packet sockets", Required: false, Mainline: true, MinKernel: "3.8", probe: probeDiag(unix.AF_PACKET)},
	{Name: "sock_diag-netlink", NeededBy: "netlink sockets", Required: false, Mainline: true, MinKernel: "4.2", probe: probeDiag(unix.AF_NETLINK)},
	{Name: "tcp-repair", NeededBy: "established TCP connections (--tcp-established)", Required: false, Mainline: true, MinKernel: "3.5", probe: probeTCPRepair},
	{Name: "ns-uts", NeededBy: "-n uts", Required: false, Mainline: true, MinKernel: "2.6.19", probe: probeNS(unix.CLONE_NEWUTS, "uts")},
	{Name: "ns-ipc", NeededBy: "-n ipc", Required: false, Mainline: true, MinKernel: "2.6.19", probe: probeNS(unix.CLONE_NEWIPC, "ipc")},
	{Name: "ns-mnt", NeededBy: "-n mnt", Required: false, Mainline: true, MinKernel: "2.4.19", probe: probeNS(unix.CLONE_NEWNS, "mnt")},
	{Name: "ns-pid", NeededBy: "-n pid, and restoring into a new PID namespace", Required: false, Mainline: true, MinKernel: "2.6.24", probe: probeNS(unix.CLONE_NEWPID, "pid")},
	{Name: "ns-net", NeededBy: "-n net, --veth-pair", Required: false, Mainline: true, MinKernel: "2.6.29", probe: probeNS(unix.CLONE_NEWNET, "net")},
	{Name: "netfilter", NeededBy: "network locking around a dump (nftables, or iptables)", Required: false, Mainline: true, MinKernel: "3.13", probe: probeNetfilter},
	{Name: "seccomp-suspend", NeededBy: "tasks under seccomp: their filters read (PTRACE_SECCOMP_GET_FILTER) and suspended for crtools' own calls (PTRACE_O_SUSPEND_SECCOMP; CAP_SYS_ADMIN, crtools not under seccomp)", Required: false, Mainline: true, MinKernel: "4.4", probe: probeSeccompSuspend},
}

// probeSeccompSuspend suspends seccomp in the traced child and puts its
// options back, and asks for a filter of a task that has none (EINVAL;
// EACCES says crtools may not read filters at all).
func probeSeccompSuspend(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	if err := ptraceSetOptions(c.pid, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_SUSPEND_SECCOMP); err != nil {
		return "", fmt.Errorf("PTRACE_O_SUSPEND_SECCOMP: %w", err)
	}
	if err := ptraceSetOptions(c.pid, unix.PTRACE_O_EXITKILL); err != nil {
		return "", fmt.Errorf("PTRACE_SETOPTIONS: %w", err)
	}
	_, _, e0 := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(c.pid), 0, 0, 0, 0)
	if e0 != unix.EINVAL && e0 != unix.ENOENT {
		return "", fmt.Errorf("PTRACE_SECCOMP_GET_FILTER of a task without filters: %v, want EINVAL", e0)
	}
	return "", nil
}

func probeSeize(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	if c.saved.Rip < childBase || c.saved.Rip >= childScratch {
		return "", fmt.Errorf("stopped child's rip %#x is outside its code", c.saved.Rip)
	}
	return "", nil
}

func probeXstate(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	buf := make([]byte, 64<<10)
	n, err := ptraceGetRegset(c.pid, ntX86Xstate, buf)
	if err != nil {
		return "", fmt.Errorf("PTRACE_GETREGSET NT_X86_XSTATE: %w", err)
	}
	// Legacy FXSAVE area (512) + XSAVE header (64) at least.
	if n < 576 {
		return "", fmt.Errorf("PTRACE_GETREGSET NT_X86_XSTATE gave %d bytes, want at least 576", n)
	}
	xfeatures := binary.LittleEndian.Uint64(buf[512:])
	return fmt.Sprintf("%d bytes, xfeatures %#x", n, xfeatures), nil
}

func probeSigmask(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	if _, err := ptraceGetSigmask(c.pid); err != nil {
		return "", fmt.Errorf("PTRACE_GETSIGMASK: %w", err)
	}
	if _, err := ptracePeekSiginfo(c.pid); err != nil {
		return "", fmt.Errorf("PTRACE_PEEKSIGINFO: %w", err)
	}
	return "", nil
}

func probeRseq(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	_, n, err := ptraceGetRseqConfig(c.pid)
	if err != nil {
		return "", fmt.Errorf("PTRACE_GET_RSEQ_CONFIGURATION: %w", err)
	}
	if n < 24 {
		return "", fmt.Errorf("PTRACE_GET_RSEQ_CONFIGURATION returned %d bytes, want at least 24", n)
	}
	return "", nil
}

func probeVMRead(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	b := make([]byte, len(childCode))
	n, err := processVMRead(c.pid, childBase+codeOff, b)
	if err != nil {
		return "", fmt.Errorf("process_vm_readv: %w", err)
	}
	if n != len(b) || !bytes.Equal(b, childCode) {
		return "", fmt.Errorf("process_vm_readv read %d bytes that are not the child's code", n)
	}
	return "", nil
}

func probeVMWrite(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	want := []byte("crtools-probe-write")
	n, err := processVMWrite(c.pid, childScratch+0x800, want)
	if err != nil {
		return "", fmt.Errorf("process_vm_writev: %w", err)
	}
	got, err := c.readMem(childScratch+0x800, len(want))
	if err != nil {
		return "", err
	}
	if n != len(want) || !bytes.Equal(got, want) {
		return "", fmt.Errorf("process_vm_writev wrote %d bytes, memory holds %q", n, got)
	}
	return "", nil
}

// tracedPidfd opens a pidfd of the traced probe child.
func tracedPidfd(e *env) (int, error) {
	c, err := e.traced()
	if err != nil {
		return -1, err
	}
	fd, err := unix.PidfdOpen(c.pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open: %w", err)
	}
	return fd, nil
}

func probePidfdOpen(e *env) (string, error) {
	fd, err := tracedPidfd(e)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return "", nil
}

func probePidfdGetfd(e *env) (string, error) {
	pidfd, err := tracedPidfd(e)
	if err != nil {
		return "", err
	}
	defer unix.Close(pidfd)
	// The child's stdin is /dev/null (os/exec).
	fd, err := unix.PidfdGetfd(pidfd, 0, 0)
	if err != nil {
		return "", fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("fstat the fd from pidfd_getfd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		return "", errors.New("pidfd_getfd gave a file that is not the child's /dev/null")
	}
	return "", nil
}

// freePid finds a PID that no task uses now, for clone3 set_tid.
func freePid() (int, error) {
	max := 32768
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			max = n
		}
	}
	base := os.Getpid()
	for i := 1; i < 4096; i++ {
		p := (base+1000+i*7)%(max-300) + 300
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); errors.Is(err, os.ErrNotExist) {
			return p, nil
		}
	}
	return 0, errors.New("find a free pid: none found")
}

func probeClone3(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	var lastErr error
	for try := 0; try < 5; try++ {
		pid, err := freePid()
		if err != nil {
			return "", err
		}
		// clone_args in the scratch page, the set_tid array after it.
		tids := make([]byte, 4)
		binary.LittleEndian.PutUint32(tids, uint32(pid))
		args := cloneArgs{ExitSignal: uint64(unix.SIGCHLD), SetTid: childScratch + 0x100, SetTidSize: 1}
		if err := c.writeMem(childScratch, cloneArgsBytes(&args)); err != nil {
			return "", err
		}
		if err := c.writeMem(childScratch+0x100, tids); err != nil {
			return "", err
		}
		ret, err := c.inject(entryFork, unix.SYS_CLONE3, childScratch, uint64(len(cloneArgsBytes(&args))))
		if err != nil {
			return "", err
		}
		if err := errnoOf(ret); err != nil {
			lastErr = fmt.Errorf("clone3 with set_tid %d: %w", pid, err)
			if errors.Is(err, unix.EEXIST) {
				continue // taken in the meantime
			}
			return "", lastErr
		}
		// The new process exits at once; reap it inside the child.
		if wret, err := c.inject(entrySyscall, unix.SYS_WAIT4, uint64(ret), 0, unix.WALL, 0); err != nil {
			return "", err
		} else if werr := errnoOf(wret); werr != nil {
			return "", fmt.Errorf("reap the clone3 child: %w", werr)
		}
		if int(ret) != pid {
			return "", fmt.Errorf("clone3 with set_tid %d created pid %d", pid, ret)
		}
		return "", nil
	}
	return "", lastErr
}

func probeMapFiles(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	dir := fmt.Sprintf("/proc/%d/map_files", c.pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", dir, err)
	}
	want := fmt.Sprintf("%x-", childBase)
	for _, ent := range ents {
		if !strings.HasPrefix(ent.Name(), want) {
			continue
		}
		p := filepath.Join(dir, ent.Name())
		f, err := os.Open(p)
		if err != nil {
			return "", err // says "open PATH: ..."
		}
		defer f.Close()
		head := make([]byte, 4)
		if _, err := f.ReadAt(head, 0); err != nil || string(head) != "\x7fELF" {
			return "", fmt.Errorf("read %s: not the child's executable (%v)", p, err)
		}
		return "", nil
	}
	return "", fmt.Errorf("%s has no entry for the child's code at %#x", dir, childBase)
}

// tracedPagemap opens /proc/PID/pagemap of the traced probe child.
func tracedPagemap(e *env) (*os.File, error) {
	c, err := e.traced()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", c.pid))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	return f, nil
}

func probePagemap(e *env) (string, error) {
	f, err := tracedPagemap(e)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], childBase/4096*8); err != nil {
		return "", fmt.Errorf("read pagemap: %w", err)
	}
	if binary.LittleEndian.Uint64(b[:])&(1<<63) == 0 {
		return "", errors.New("pagemap says the child's running code page is not present")
	}
	return "", nil
}

func probePagemapScan(e *env) (string, error) {
	f, err := tracedPagemap(e)
	if err != nil {
		return "", err
	}
	defer f.Close()
	regions, err := pagemapScanPresent(int(f.Fd()), childBase, childScratch)
	if err != nil {
		return "", fmt.Errorf("ioctl PAGEMAP_SCAN: %w", err)
	}
	if len(regions) == 0 || regions[0].Start != childBase || regions[0].Categories&pagemap.PageIsPresent == 0 {
		return "", fmt.Errorf("PAGEMAP_SCAN does not report the child's code page as present (%d regions)", len(regions))
	}
	return "", nil
}

func probeUffdWP(e *env) (string, error) {
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly, 0, 0)
	if errno == unix.EINVAL {
		r, _, errno = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	}
	if errno != 0 {
		return "", fmt.Errorf("userfaultfd: %w", errno)
	}
	fd := int(r)
	defer unix.Close(fd)
	api, err := uffdAPIHandshake(fd, uffdFeatureWPAsync|uffdFeatureWPUnpopul)
	if err != nil {
		return "", fmt.Errorf("UFFDIO_API with WP_ASYNC|WP_UNPOPULATED: %w", err)
	}
	if api.Features&uffdFeatureWPAsync == 0 {
		return "", fmt.Errorf("UFFDIO_API: features %#x lack WP_ASYNC", api.Features)
	}
	mem, err := unix.Mmap(-1, 0, 2*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return "", fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(mem)
	reg, err := uffdRegister(fd, sliceAddr(mem), uint64(len(mem)), uffdioRegisterModeWP)
	if err != nil {
		return "", fmt.Errorf("UFFDIO_REGISTER in write-protect mode: %w", err)
	}
	if reg.Ioctls&(1<<uffdioWriteprotectIoctl) == 0 {
		return "", fmt.Errorf("UFFDIO_REGISTER: ioctls %#x lack UFFDIO_WRITEPROTECT", reg.Ioctls)
	}
	return "", nil
}

func probeKcmp(e *env) (string, error) {
	c, err := e.traced()
	if err != nil {
		return "", err
	}
	self := os.Getpid()
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(c.pid), kcmpVM, 0, 0, 0)
	if errno != 0 {
		return "", fmt.Errorf("kcmp(KCMP_VM): %w", errno)
	}
	if r == 0 {
		return "", errors.New("kcmp(KCMP_VM) says crtools and the child share memory")
	}
	fd, err := unix.Dup(1)
	if err != nil {
		return "", fmt.Errorf("dup: %w", err)
	}
	defer unix.Close(fd)
	r, _, errno = unix.Syscall6(unix.SYS_KCMP, uintptr(self), uintptr(self), kcmpFile, 1, uintptr(fd), 0)
	if errno != 0 {
		return "", fmt.Errorf("kcmp(KCMP_FILE): %w", errno)
	}
	if r != 0 {
		return "", errors.New("kcmp(KCMP_FILE) says a dup'ed descriptor is another file")
	}
	return "", nil
}

func probeMemfd(e *env) (string, error) {
	fd, err := unix.MemfdCreate("crtools-check", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return "", fmt.Errorf("memfd_create: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("memfd")); err != nil {
		return "", fmt.Errorf("write memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_GROW); err != nil {
		return "", fmt.Errorf("seal memfd: %w", err)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_GROW == 0 {
		return "", fmt.Errorf("read memfd seals: %d, %v", seals, err)
	}
	return "", nil
}

// probeVdsoMap uses a child of its own, because it unmaps the vDSO.
func probeVdsoMap(e *env) (string, error) {
	c, err := e.newTraced()
	if err != nil {
		return "", err
	}
	maps, err := readMaps(c.pid)
	if err != nil {
		return "", err
	}
	var vvarStart uint64
	var specials []mapping
	for _, m := range maps {
		switch m.name {
		case "[vvar]", "[vvar_vclock]", "[vdso]":
			specials = append(specials, m)
			if m.name == "[vvar]" && vvarStart == 0 {
				vvarStart = m.start
			}
		}
	}
	if len(specials) == 0 {
		return "", errors.New("the child has no [vdso] to move")
	}
	if vvarStart == 0 {
		vvarStart = specials[0].start
	}
	// While a vDSO is mapped the call must be refused with EEXIST
	// (unknown commands give EINVAL).
	ret, err := c.inject(entrySyscall, unix.SYS_ARCH_PRCTL, archMapVdso64, vvarStart)
	if err != nil {
		return "", err
	}
	if errnoOf(ret) != unix.EEXIST {
		return "", fmt.Errorf("arch_prctl(ARCH_MAP_VDSO_64) with a vDSO mapped: got %d, want EEXIST", ret)
	}
	for _, m := range specials {
		if r, err := c.inject(entrySyscall, unix.SYS_MUNMAP, m.start, m.end-m.start); err != nil {
			return "", err
		} else if err := errnoOf(r); err != nil {
			return "", fmt.Errorf("unmap %s in the child: %w", m.name, err)
		}
	}
	ret, err = c.inject(entrySyscall, unix.SYS_ARCH_PRCTL, archMapVdso64, vvarStart)
	if err != nil {
		return "", err
	}
	if err := errnoOf(ret); err != nil {
		return "", fmt.Errorf("arch_prctl(ARCH_MAP_VDSO_64, %#x): %w", vvarStart, err)
	}
	after, err := readMaps(c.pid)
	if err != nil {
		return "", err
	}
	for _, m := range after {
		if m.name == "[vdso]" {
			return fmt.Sprintf("vDSO of %d bytes mapped again", ret), nil
		}
	}
	return "", errors.New("arch_prctl(ARCH_MAP_VDSO_64) succeeded but no [vdso] appeared")
}

func probeMMMap(e *env) (string, error) {
	size, err := prctlMMMapSizeQuery()
	if err != nil {
		return "", fmt.Errorf("prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): %w", err)
	}
	if size != prctlMMMapSize {
		return "", fmt.Errorf("struct prctl_mm_map is %d bytes, crtools knows %d", size, prctlMMMapSize)
	}
	return "", nil
}

func probeProcTimers(e *env) (string, error) {
	if _, err := os.ReadFile("/proc/self/timers"); err != nil {
		return "", fmt.Errorf("read /proc/self/timers: %w", err)
	}
	return "", nil
}

func probeCloseRange(e *env) (string, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return "", fmt.Errorf("dup: %w", err)
	}
	if err := unix.CloseRange(uint(fd), uint(fd), 0); err != nil {
		unix.Close(fd)
		return "", fmt.Errorf("close_range: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		unix.Close(fd)
		return "", errors.New("close_range left the descriptor open")
	}
	return "", nil
}

func probeTCPRepair(e *env) (string, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return "", fmt.Errorf("bind 127.0.0.1: %w", err)
	}
	if err := unix.Listen(lfd, 1); err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		return "", fmt.Errorf("getsockname: %w", err)
	}
	cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(cfd)
	if err := unix.Connect(cfd, sa); err != nil {
		return "", fmt.Errorf("connect over loopback: %w", err)
	}
	afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(afd)
	if err := unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return "", fmt.Errorf("setsockopt TCP_REPAIR on: %w", err)
	}
	if err := unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return "", fmt.Errorf("setsockopt TCP_REPAIR_QUEUE: %w", err)
	}
	if _, err := unix.GetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); err != nil {
		return "", fmt.Errorf("getsockopt TCP_QUEUE_SEQ: %w", err)
	}
	// Leave repair mode so that close sends a FIN (in repair mode it
	// would vanish silently).
	if err := unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0); err != nil {
		return "", fmt.Errorf("setsockopt TCP_REPAIR off: %w", err)
	}
	return "", nil
}

func probeNS(flag uintptr, name string) func(e *env) (string, error) {
	return func(e *env) (string, error) {
		c, err := e.startChild(flag)
		if err != nil {
			return "", fmt.Errorf("start a child in a new %s namespace: %w", name, err)
		}
		var mine, its unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+name, &mine); err != nil {
			return "", fmt.Errorf("stat /proc/self/ns/%s: %w", name, err)
		}
		p := fmt.Sprintf("/proc/%d/ns/%s", c.pid, name)
		if err := unix.Stat(p, &its); err != nil {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		if mine.Ino == its.Ino {
			return "", fmt.Errorf("the child started with CLONE_NEW%s shares crtools' %s namespace", strings.ToUpper(name), name)
		}
		return "", nil
	}
}

func probeNetfilter(e *env) (string, error) {
	conn, err := nftables.New()
	if err == nil {
		defer conn.CloseLasting()
		tables, lerr := conn.ListTables()
		if lerr == nil {
			return fmt.Sprintf("nftables, %d tables", len(tables)), nil
		}
		err = lerr
	}
	for _, name := range []string{"iptables-nft", "iptables-legacy", "iptables"} {
		if p, lerr := exec.LookPath(name); lerr == nil {
			if out, rerr := exec.Command(p, "-w", "-L", "-n").CombinedOutput(); rerr == nil {
				return "via " + name, nil
			} else {
				err = fmt.Errorf("%s -L: %v: %s", name, rerr, bytes.TrimSpace(out))
			}
		}
	}
	return "", fmt.Errorf("list nftables tables: %w (and no working iptables)", err)
}
