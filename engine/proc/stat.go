package proc

import (
	"bytes"
	"fmt"
	"strconv"
)

// PF_KTHREAD is the per-task flag (stat field 9) of kernel threads.
const PF_KTHREAD = 0x00200000

// PF_EXITING is the per-task flag (stat field 9) of a task inside do_exit
// that is not a zombie yet: it runs (R) or sleeps (D) while it releases
// its memory and files.
const PF_EXITING = 0x00000004

// Stat holds the fields of /proc/PID/stat (or /proc/PID/task/TID/stat) that
// crtools uses. Field numbers in comments are those of proc(5).
type Stat struct {
	Pid        int    // 1
	Comm       string // 2, without the parentheses
	State      byte   // 3
	Ppid       int    // 4
	Pgrp       int    // 5
	Session    int    // 6
	TtyNr      int    // 7
	Tpgid      int    // 8, -1 without a foreground group
	Flags      uint64 // 9
	Priority   int64  // 18
	Nice       int64  // 19
	NumThreads int    // 20
	StartTime  uint64 // 22
	StartCode  uint64 // 26
	EndCode    uint64 // 27
	StartStack uint64 // 28
	ExitSignal int    // 38
	RtPriority uint64 // 40
	Policy     uint64 // 41
	StartData  uint64 // 45
	EndData    uint64 // 46
	StartBrk   uint64 // 47
	ArgStart   uint64 // 48
	ArgEnd     uint64 // 49
	EnvStart   uint64 // 50
	EnvEnd     uint64 // 51
	ExitCode   int    // 52
}

// IsKernelThread reports whether the task is a kernel thread.
func (s *Stat) IsKernelThread() bool { return s.Flags&PF_KTHREAD != 0 }

// IsExiting reports whether the task is inside do_exit (PF_EXITING).
func (s *Stat) IsExiting() bool { return s.Flags&PF_EXITING != 0 }

// Exited reports whether the task has exited: a zombie (Z) or being
// released (X).
func (s *Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// ParseStat parses the contents of a stat file. The comm may hold any byte
// including spaces and parentheses, so it ends at the LAST ')' of the line.
func ParseStat(data []byte) (*Stat, error) {
	data = bytes.TrimRight(data, "\n")
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return nil, fmt.Errorf("parse stat: no (comm) in %q", truncate(data))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil {
		return nil, fmt.Errorf("parse stat: pid: %w", err)
	}
	s := &Stat{Pid: pid, Comm: string(data[open+1 : closing])}
	rest := bytes.Fields(data[closing+1:])
	// rest[0] is field 3.
	if len(rest) < 1 || len(rest[0]) != 1 {
		return nil, fmt.Errorf("parse stat: bad state field")
	}
	s.State = rest[0][0]
	field := func(n int) (uint64, error) {
		i := n - 3
		if i >= len(rest) {
			return 0, nil // older kernels print fewer fields
		}
		v, err := strconv.ParseUint(string(rest[i]), 10, 64)
		if err != nil {
			// Some fields are signed (nice, priority, tty).
			sv, serr := strconv.ParseInt(string(rest[i]), 10, 64)
			if serr != nil {
				return 0, fmt.Errorf("parse stat: field %d %q: %w", n, rest[i], err)
			}
			return uint64(sv), nil
		}
		return v, nil
	}
	if len(rest) < 50 {
		return nil, fmt.Errorf("parse stat: %d fields, want 52", len(rest)+2)
	}
	ints := []struct {
		n   int
		dst any
	}{
		{4, &s.Ppid}, {5, &s.Pgrp}, {6, &s.Session}, {7, &s.TtyNr}, {8, &s.Tpgid}, {9, &s.Flags},
		{18, &s.Priority}, {19, &s.Nice}, {20, &s.NumThreads}, {22, &s.StartTime},
		{26, &s.StartCode}, {27, &s.EndCode}, {28, &s.StartStack}, {38, &s.ExitSignal},
		{40, &s.RtPriority}, {41, &s.Policy}, {45, &s.StartData}, {46, &s.EndData},
		{47, &s.StartBrk}, {48, &s.ArgStart}, {49, &s.ArgEnd}, {50, &s.EnvStart},
		{51, &s.EnvEnd}, {52, &s.ExitCode},
	}
	for _, f := range ints {
		v, err := field(f.n)
		if err != nil {
			return nil, err
		}
		switch d := f.dst.(type) {
		case *int:
			*d = int(int64(v))
		case *int64:
			*d = int64(v)
		case *uint64:
			*d = v
		}
	}
	return s, nil
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) {
	return readStatFile(fmt.Sprintf("/proc/%d/stat", pid))
}

// ReadTaskStat reads /proc/PID/task/TID/stat.
func ReadTaskStat(pid, tid int) (*Stat, error) {
	return readStatFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
}

func readStatFile(path string) (*Stat, error) {
	b, err := ReadRecord(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseStat(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
