package files

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// eventfd: the counter is in fdinfo ("eventfd-count", hex). EFD_SEMAPHORE
// is kept in the flags word (its own bit, 0x1, which no open flag uses) so
// that it survives in CRIU's entry, which has no field for it.

const efdSemaphoreFlag = unix.EFD_SEMAPHORE

func dumpEventfd(e *pb.FileEntry, id, flags uint32, fown *pb.FownEntry, info *fdinfo) error {
	v, ok := info.value("eventfd-count")
	if !ok {
		return fmt.Errorf("no eventfd-count in fdinfo")
	}
	count, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return fmt.Errorf("parse eventfd-count %q: %w", v, err)
	}
	if s, ok := info.value("eventfd-semaphore"); ok && s == "1" {
		flags |= efdSemaphoreFlag
	}
	e.Efd = &pb.EventfdFileEntry{Id: u32p(id), Flags: u32p(flags), Fown: fown, Counter: u64p(count)}
	return nil
}

func openEventfd(e *pb.FileEntry) (*os.File, error) {
	ee := e.GetEfd()
	fl := unix.EFD_CLOEXEC
	if ee.GetFlags()&efdSemaphoreFlag != 0 {
		fl |= unix.EFD_SEMAPHORE
	}
	// eventfd(2) takes an unsigned int initial value; a larger counter is
	// set by writing it.
	fd, err := unix.Eventfd(0, fl)
	if err != nil {
		return nil, fmt.Errorf("create eventfd %d: %w", ee.GetId(), os.NewSyscallError("eventfd", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("eventfd%d", ee.GetId()))
	if c := ee.GetCounter(); c != 0 {
		var b [8]byte
		for i := range 8 {
			b[i] = byte(c >> (8 * i))
		}
		if _, err := unix.Write(fd, b[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("set eventfd %d counter to %d: %w", ee.GetId(), c, os.NewSyscallError("write", err))
		}
	}
	if err := setFileFlags(f, ee.GetFlags()&^efdSemaphoreFlag); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
