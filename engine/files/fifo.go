package files

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// FIFOs: a regular-file entry for the path and a FIFO entry pointing to it
// and to the pipe (the FIFO's inode), whose data is saved like a pipe's.

func (d *Dumper) dumpFifo(c *Collected, e *pb.FileEntry, f *os.File, st *unix.Stat_t, link string, flags uint32, fown *pb.FownEntry, info *fdinfo) error {
	if strings.HasSuffix(link, " (deleted)") {
		return fmt.Errorf("FIFO %s: %w", link, ErrUnsupported)
	}
	regID := d.newID()
	reg := pb.FdTypes_REG
	d.set.Files = append(d.set.Files, &pb.FileEntry{Type: &reg, Id: u32p(regID), Reg: &pb.RegFileEntry{
		Id: u32p(regID), Flags: u32p(flags), Pos: u64p(0), Fown: fown, Name: strp(link),
		MntId: i32p(int32(info.MntID)), Mode: u32p(st.Mode),
	}})
	e.Fifo = &pb.FifoEntry{Id: u32p(c.ID), PipeId: u32p(uint32(st.Ino)), RegfId: u32p(regID)}
	// A FIFO opened O_RDWR or O_RDONLY is a read end; a write-only one is
	// peeked through a read end opened by peekPipe.
	return d.pipeData(f, st, flags)
}

func (r *Restorer) openFifo(e *pb.FileEntry) (*os.File, error) {
	fe := e.GetFifo()
	reg := r.byID[fe.GetRegfId()].GetReg()
	if reg == nil {
		return nil, fmt.Errorf("FIFO %d: regular-file entry %d: %w", fe.GetId(), fe.GetRegfId(), errNoEntry)
	}
	path := reg.GetName()
	pipeID := fe.GetPipeId()
	if _, ok := r.fifoKeep[pipeID]; !ok {
		// O_RDWR never blocks on a FIFO; this opening keeps the pipe (and
		// the data written into it) alive until every real end is open.
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open FIFO %s: %w", path, os.NewSyscallError("open", err))
		}
		k := os.NewFile(uintptr(fd), path)
		r.keep = append(r.keep, k)
		r.fifoKeep[pipeID] = k
		if err := fillPipe(k, r.set.PipeData[pipeID]); err != nil {
			return nil, fmt.Errorf("refill FIFO %s: %w", path, err)
		}
	}
	fl := int(reg.GetFlags())
	fd, err := unix.Open(path, (fl&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL))|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open FIFO %s: %w", path, os.NewSyscallError("open", err))
	}
	f := os.NewFile(uintptr(fd), path)
	if err := setFileFlags(f, reg.GetFlags()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
