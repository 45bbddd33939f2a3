package files

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// signalfd: the mask is in fdinfo ("sigmask", hex, bit n-1 for signal n).

func dumpSignalfd(e *pb.FileEntry, id, flags uint32, fown *pb.FownEntry, info *fdinfo) error {
	v, ok := info.value("sigmask")
	if !ok {
		return fmt.Errorf("no sigmask in fdinfo")
	}
	mask, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return fmt.Errorf("parse sigmask %q: %w", v, err)
	}
	e.Sgfd = &pb.SignalfdEntry{Id: u32p(id), Flags: u32p(flags), Fown: fown, Sigmask: u64p(mask)}
	return nil
}

func openSignalfd(e *pb.FileEntry) (*os.File, error) {
	se := e.GetSgfd()
	var set unix.Sigset_t
	set.Val[0] = se.GetSigmask()
	fd, err := unix.Signalfd(-1, &set, unix.SFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create signalfd %d: %w", se.GetId(), os.NewSyscallError("signalfd", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("signalfd%d", se.GetId()))
	if err := setFileFlags(f, se.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
