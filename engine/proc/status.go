package proc

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Status holds the fields of /proc/PID/status that crtools uses.
type Status struct {
	Name      string // comm, with the kernel's escapes undone
	Umask     uint32
	HasUmask  bool
	State     byte
	Tgid      int
	Pid       int
	PPid      int
	TracerPid int
	Uid       [4]uint32 // real, effective, saved, filesystem
	Gid       [4]uint32
	Groups    []uint32
	// NSpid, NSpgid, NSsid: the ids in each pid namespace the task is
	// in, outermost first (the last is the one seen inside its own).
	NSpid      []int
	NSpgid     []int
	NSsid      []int
	Threads    int
	SigPnd     uint64 // pending for this thread
	ShdPnd     uint64 // pending for the thread group
	SigBlk     uint64
	SigIgn     uint64
	SigCgt     uint64
	CapInh     uint64
	CapPrm     uint64
	CapEff     uint64
	CapBnd     uint64
	CapAmb     uint64
	NoNewPrivs uint32
	Seccomp    uint32
}

// ParseStatus parses the contents of a status file. A dump parses one per
// thread of the tree, so it goes through the lines without a scanner and
// without maps.
func ParseStatus(data []byte) (*Status, error) {
	s := &Status{}
	// Lines that must be there, as bits of seen.
	const (
		seenName = 1 << iota
		seenTgid
		seenPid
		seenPPid
		seenTracerPid
		seenUid
		seenGid
		seenSigBlk
		seenSigIgn
		seenSigCgt
		seenCapEff
		seenAll = 1<<iota - 1
	)
	seen := 0
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		// No string of the whole line: every conversion below is
		// either kept (Name) or passed to a parser that keeps nothing,
		// for which the compiler makes no copy on the heap (a status
		// has some 60 lines, a dump parses one a thread).
		val := bytes.TrimLeft(v, " \t")
		var err error
		switch string(k) {
		case "Name":
			s.Name = unescapeName(string(val))
			seen |= seenName
		case "Umask":
			var v uint64
			v, err = strconv.ParseUint(string(val), 8, 32)
			s.Umask, s.HasUmask = uint32(v), true
		case "State":
			if len(val) == 0 {
				err = fmt.Errorf("empty")
			} else {
				s.State = val[0]
			}
		case "Tgid":
			s.Tgid, err = strconv.Atoi(string(val))
			seen |= seenTgid
		case "Pid":
			s.Pid, err = strconv.Atoi(string(val))
			seen |= seenPid
		case "PPid":
			s.PPid, err = strconv.Atoi(string(val))
			seen |= seenPPid
		case "TracerPid":
			s.TracerPid, err = strconv.Atoi(string(val))
			seen |= seenTracerPid
		case "Threads":
			s.Threads, err = strconv.Atoi(string(val))
		case "Uid", "Gid":
			f := bytes.Fields(val)
			if len(f) != 4 {
				err = fmt.Errorf("want 4 ids, got %d", len(f))
				break
			}
			dst := &s.Uid
			seen |= seenUid
			if k[0] == 'G' {
				dst = &s.Gid
				seen |= seenGid
			}
			for i := range f {
				var v uint64
				if v, err = strconv.ParseUint(string(f[i]), 10, 32); err != nil {
					break
				}
				dst[i] = uint32(v)
			}
		case "Groups":
			s.Groups = []uint32{}
			for _, g := range bytes.Fields(val) {
				var v uint64
				if v, err = strconv.ParseUint(string(g), 10, 32); err != nil {
					break
				}
				s.Groups = append(s.Groups, uint32(v))
			}
		case "NSpid":
			s.NSpid, err = parseIDs(string(val))
		case "NSpgid":
			s.NSpgid, err = parseIDs(string(val))
		case "NSsid":
			s.NSsid, err = parseIDs(string(val))
		case "SigPnd":
			s.SigPnd, err = strconv.ParseUint(string(val), 16, 64)
		case "ShdPnd":
			s.ShdPnd, err = strconv.ParseUint(string(val), 16, 64)
		case "SigBlk":
			s.SigBlk, err = strconv.ParseUint(string(val), 16, 64)
			seen |= seenSigBlk
		case "SigIgn":
			s.SigIgn, err = strconv.ParseUint(string(val), 16, 64)
			seen |= seenSigIgn
		case "SigCgt":
			s.SigCgt, err = strconv.ParseUint(string(val), 16, 64)
			seen |= seenSigCgt
		case "CapInh":
			s.CapInh, err = strconv.ParseUint(string(val), 16, 64)
		case "CapPrm":
			s.CapPrm, err = strconv.ParseUint(string(val), 16, 64)
		case "CapEff":
			s.CapEff, err = strconv.ParseUint(string(val), 16, 64)
			seen |= seenCapEff
		case "CapBnd":
			s.CapBnd, err = strconv.ParseUint(string(val), 16, 64)
		case "CapAmb":
			s.CapAmb, err = strconv.ParseUint(string(val), 16, 64)
		case "NoNewPrivs", "Seccomp":
			var v uint64
			v, err = strconv.ParseUint(string(val), 10, 32)
			if k[0] == 'S' {
				s.Seccomp = uint32(v)
			} else {
				s.NoNewPrivs = uint32(v)
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse status: %s: %w", k, err)
		}
	}
	if seen != seenAll {
		for i, k := range []string{"Name", "Tgid", "Pid", "PPid", "TracerPid", "Uid", "Gid", "SigBlk", "SigIgn", "SigCgt", "CapEff"} {
			if seen&(1<<i) == 0 {
				return nil, fmt.Errorf("parse status: no %s line", k)
			}
		}
	}
	return s, nil
}

// parseIDs parses an NSpid-like line: one id per pid namespace.
func parseIDs(val string) ([]int, error) {
	var ids []int
	for _, g := range strings.Fields(val) {
		v, err := strconv.Atoi(g)
		if err != nil {
			return nil, err
		}
		ids = append(ids, v)
	}
	return ids, nil
}

// unescapeName undoes the escaping of the Name line: the kernel prints the
// comm with '\n' as "\n" and '\\' as "\\" (string_escape_mem with ESCAPE_SPACE
// | ESCAPE_SPECIAL semantics restricted to those), so a comm holding a
// newline cannot forge extra lines.
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case '\\':
			b.WriteByte('\\')
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (*Status, error) {
	return readStatusFile(fmt.Sprintf("/proc/%d/status", pid))
}

// ReadTaskStatus reads /proc/PID/task/TID/status (per-thread masks and creds).
func ReadTaskStatus(pid, tid int) (*Status, error) {
	return readStatusFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
}

// readStatusFile reads and parses a status file straight from the pooled
// buffer (ParseStatus keeps nothing of it): no copy of each thread's 1.5
// KiB.
func readStatusFile(path string) (*Status, error) {
	var s *Status
	var perr error
	err := readPooled(path, true, func(b []byte) error {
		s, perr = ParseStatus(b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("%s: %w", path, perr)
	}
	return s, nil
}
