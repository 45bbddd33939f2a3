package restore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// The first puppet only has to exist and stop at its exec: crtools writes
// the code it runs. Exec'ing crtools' own binary for it (a 20 MiB
// dynamically linked ELF: its segments and the dynamic loader mapped)
// took 1.2-2.6 ms from Go's exec here against 0.6-1.8 ms for a static
// executable of one page (min and median of 20), so the first puppet is
// puppetELF, written to a memfd, and /proc/self/exe only when the memfd
// cannot be made or exec'ed (vm.memfd_noexec).

// puppetELFBase is where puppetELF is loaded: the usual base of a static
// executable. The puppet unmaps it (unmapPuppet) before any task's memory
// is mapped, and pickTrampoline keeps clear of it.
const puppetELFBase = 0x400000

// ELF constants for puppetELF (elf.h).
const (
	elfHeaderSize = 64
	elfPhdrSize   = 56
	ptLoad        = 1
	ptGnuStack    = 0x6474e551
	pfX, pfW, pfR = 1, 2, 4
)

// puppetELF is a minimal static x86-64 executable: an ELF header, a
// PT_LOAD of its own single page (read-execute) and a PT_GNU_STACK without
// execute, so that the exec gives the task no READ_IMPLIES_EXEC
// personality, which every restored task would inherit. Its entry point
// holds trampolineCode, which nothing runs before crtools rewrites it.
func puppetELF() []byte {
	const phnum = 2
	codeOff := elfHeaderSize + phnum*elfPhdrSize
	b := make([]byte, codeOff+len(trampolineCode))
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */, 0 /* System V */})
	le.PutUint16(b[16:], 2)  // e_type: ET_EXEC
	le.PutUint16(b[18:], 62) // e_machine: EM_X86_64
	le.PutUint32(b[20:], 1)  // e_version
	le.PutUint64(b[24:], puppetELFBase+uint64(codeOff))
	le.PutUint64(b[32:], elfHeaderSize) // e_phoff
	le.PutUint16(b[52:], elfHeaderSize) // e_ehsize
	le.PutUint16(b[54:], elfPhdrSize)   // e_phentsize
	le.PutUint16(b[56:], phnum)         // e_phnum
	ph := func(i int, typ, flags uint32, off, vaddr, size, align uint64) {
		p := b[elfHeaderSize+i*elfPhdrSize:]
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], flags)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], vaddr) // p_vaddr
		le.PutUint64(p[24:], vaddr) // p_paddr
		le.PutUint64(p[32:], size)  // p_filesz
		le.PutUint64(p[40:], size)  // p_memsz
		le.PutUint64(p[48:], align)
	}
	ph(0, ptLoad, pfR|pfX, 0, puppetELFBase, uint64(len(b)), pageSize)
	ph(1, ptGnuStack, pfR|pfW, 0, 0, 0, 16)
	copy(b[codeOff:], trampolineCode)
	return b
}

// puppetMemfd returns a memfd (close-on-exec) holding puppetELF, to be
// exec'ed as /proc/self/fd/N.
func puppetMemfd() (int, error) {
	fd, err := unix.MemfdCreate("crtools-puppet", unix.MFD_CLOEXEC|unix.MFD_EXEC)
	if err == unix.EINVAL {
		// Before Linux 6.3 (no MFD_EXEC), memfds are executable.
		fd, err = unix.MemfdCreate("crtools-puppet", unix.MFD_CLOEXEC)
	}
	if err != nil {
		return -1, fmt.Errorf("create puppet memfd: %w", err)
	}
	b := puppetELF()
	if n, err := unix.Write(fd, b); err != nil || n != len(b) {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
		}
		return -1, fmt.Errorf("write puppet memfd: %w", err)
	}
	return fd, nil
}
