package proc

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// SIGEV_* notification kinds of <asm-generic/siginfo.h>.
const (
	SigevSignal   = 0
	SigevNone     = 1
	SigevThread   = 2
	SigevThreadID = 4
)

// PosixTimer is one entry of /proc/PID/timers.
type PosixTimer struct {
	ID       int32
	Signo    int
	SivalPtr uint64
	Notify   int // SIGEV_*
	NotifyID int // the pid or tid after "/pid." or "/tid."
	ClockID  int32
}

// ParseTimers parses /proc/PID/timers. Each timer is four lines:
//
//	ID: 0
//	signal: 14/0000000000000000
//	notify: signal/pid.1234
//	ClockID: 1
func ParseTimers(data []byte) ([]PosixTimer, error) {
	var out []PosixTimer
	var cur *PosixTimer
	// Line by line without a bufio.Scanner, whose 4 KiB buffer was most of
	// what a dump allocated for the (usually empty) timers of every task.
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		key, val, ok := strings.Cut(string(bytes.TrimSuffix(line, []byte("\r"))), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		if key == "ID" {
			v, err := strconv.ParseInt(val, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse timers: ID %q: %w", val, err)
			}
			out = append(out, PosixTimer{ID: int32(v)})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("parse timers: %q before the first ID", key)
		}
		switch key {
		case "signal":
			sig, ptr, ok := strings.Cut(val, "/")
			if !ok {
				return nil, fmt.Errorf("parse timers: bad signal %q", val)
			}
			v, err := strconv.Atoi(sig)
			if err != nil {
				return nil, fmt.Errorf("parse timers: bad signal %q", val)
			}
			p, err := strconv.ParseUint(ptr, 16, 64)
			if err != nil {
				return nil, fmt.Errorf("parse timers: bad sival %q", val)
			}
			cur.Signo, cur.SivalPtr = v, p
		case "notify":
			kind, target, ok := strings.Cut(val, "/")
			if !ok {
				return nil, fmt.Errorf("parse timers: bad notify %q", val)
			}
			switch kind {
			case "signal":
				cur.Notify = SigevSignal
			case "none":
				cur.Notify = SigevNone
			case "thread":
				cur.Notify = SigevThreadID
			default:
				return nil, fmt.Errorf("parse timers: unknown notify %q", val)
			}
			_, id, ok := strings.Cut(target, ".")
			if !ok {
				return nil, fmt.Errorf("parse timers: bad notify %q", val)
			}
			v, err := strconv.Atoi(id)
			if err != nil {
				return nil, fmt.Errorf("parse timers: bad notify %q", val)
			}
			cur.NotifyID = v
		case "ClockID":
			v, err := strconv.ParseInt(val, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse timers: bad ClockID %q", val)
			}
			cur.ClockID = int32(v)
		}
	}
	return out, nil
}

// ReadTimers reads /proc/PID/timers.
func ReadTimers(pid int) ([]PosixTimer, error) {
	path := fmt.Sprintf("/proc/%d/timers", pid)
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseTimers(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
