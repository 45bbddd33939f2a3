package files

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

// timerfd: clock, ticks (expirations not read yet), settime flags, the
// remaining time (fdinfo prints it relative even for an absolute timer) and
// the interval.
//
// Restore arms the timer with the remaining time as dumped, counted from the
// moment of restore (as CRIU does): the time the process spent checkpointed
// does not count, as if it had been frozen. An absolute timer
// (TFD_TIMER_ABSTIME) is re-armed at now+remaining with the same flags, so
// TFD_TIMER_CANCEL_ON_SET keeps working. Unread expirations come back with
// the TFD_IOC_SET_TICKS ioctl.

func dumpTimerfd(e *pb.FileEntry, id, flags uint32, fown *pb.FownEntry, f *os.File, pid, fd int) error {
	// timerfd_gettime first: for a periodic timer that expired it moves
	// the timer to its next expiry and adds the missed periods to ticks
	// (as the task's next read or gettime would), so the remaining time
	// and the ticks read from fdinfo afterwards are exact. fdinfo alone
	// shows 0 remaining for such a timer.
	var cur unix.ItimerSpec
	if err := unix.TimerfdGettime(int(f.Fd()), &cur); err != nil {
		return fmt.Errorf("read timer: %w", os.NewSyscallError("timerfd_gettime", err))
	}
	info, err := readFdinfo(pid, fd)
	if err != nil {
		return err
	}
	te := &pb.TimerfdEntry{Id: u32p(id), Flags: u32p(flags), Fown: fown}
	get := func(k string) (string, error) {
		v, ok := info.value(k)
		if !ok {
			return "", fmt.Errorf("no %q in timerfd fdinfo", k)
		}
		return v, nil
	}
	v, err := get("clockid")
	if err != nil {
		return err
	}
	clock, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("parse clockid %q: %w", v, err)
	}
	if v, err = get("ticks"); err != nil {
		return err
	}
	ticks, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fmt.Errorf("parse ticks %q: %w", v, err)
	}
	if v, err = get("settime flags"); err != nil {
		return err
	}
	sflags, err := strconv.ParseUint(v, 8, 32)
	if err != nil {
		return fmt.Errorf("parse settime flags %q: %w", v, err)
	}
	te.Clockid, te.Ticks, te.SettimeFlags = u32p(uint32(clock)), u64p(ticks), u32p(uint32(sflags))
	te.Vsec, te.Vnsec = u64p(uint64(cur.Value.Sec)), u64p(uint64(cur.Value.Nsec))
	te.Isec, te.Insec = u64p(uint64(cur.Interval.Sec)), u64p(uint64(cur.Interval.Nsec))
	e.Tfd = te
	return nil
}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64).
const tfdIocSetTicks = 0x40085400

func openTimerfd(e *pb.FileEntry) (*os.File, error) {
	te := e.GetTfd()
	fd, err := unix.TimerfdCreate(int(te.GetClockid()), unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create timerfd %d (clock %d): %w", te.GetId(), te.GetClockid(), os.NewSyscallError("timerfd_create", err))
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("timerfd%d", te.GetId()))
	fail := func(err error) (*os.File, error) { f.Close(); return nil, err }
	spec := unix.ItimerSpec{
		Value:    unix.Timespec{Sec: int64(te.GetVsec()), Nsec: int64(te.GetVnsec())},
		Interval: unix.Timespec{Sec: int64(te.GetIsec()), Nsec: int64(te.GetInsec())},
	}
	sflags := int(te.GetSettimeFlags())
	if spec.Value.Sec == 0 && spec.Value.Nsec == 0 && (spec.Interval.Sec != 0 || spec.Interval.Nsec != 0) {
		// A periodic timer dumped from fdinfo alone (CRIU's images) can
		// show no remaining time: its next expiry is within a period.
		spec.Value = spec.Interval
	}
	armed := spec.Value.Sec != 0 || spec.Value.Nsec != 0
	if armed && sflags&unix.TFD_TIMER_ABSTIME != 0 {
		var now unix.Timespec
		if err := unix.ClockGettime(int32(te.GetClockid()), &now); err != nil {
			return fail(fmt.Errorf("read clock %d: %w", te.GetClockid(), os.NewSyscallError("clock_gettime", err)))
		}
		spec.Value = addTimespec(now, spec.Value)
	}
	if armed {
		if err := unix.TimerfdSettime(fd, sflags, &spec, nil); err != nil {
			return fail(fmt.Errorf("arm timerfd %d: %w", te.GetId(), os.NewSyscallError("timerfd_settime", err)))
		}
	}
	if t := te.GetTicks(); t != 0 {
		if err := setTicks(fd, t); err != nil {
			return fail(fmt.Errorf("set %d pending expirations of timerfd %d: %w", t, te.GetId(), err))
		}
	}
	if err := setFileFlags(f, te.GetFlags()); err != nil {
		return fail(err)
	}
	return f, nil
}

func addTimespec(a, b unix.Timespec) unix.Timespec {
	s, n := a.Sec+b.Sec, a.Nsec+b.Nsec
	if n >= 1e9 {
		s, n = s+1, n-1e9
	}
	return unix.Timespec{Sec: s, Nsec: n}
}
