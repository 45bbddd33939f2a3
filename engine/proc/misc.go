package proc

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseAuxv splits the raw /proc/PID/auxv into 64-bit words (type, value
// pairs, ending with AT_NULL), as CRIU's mm_saved_auxv stores them.
func ParseAuxv(data []byte) ([]uint64, error) {
	if len(data)%16 != 0 {
		return nil, fmt.Errorf("parse auxv: %d bytes is not a whole number of pairs", len(data))
	}
	out := make([]uint64, 0, len(data)/8)
	for i := 0; i+16 <= len(data); i += 16 {
		typ := binary.LittleEndian.Uint64(data[i:])
		val := binary.LittleEndian.Uint64(data[i+8:])
		out = append(out, typ, val)
		if typ == 0 {
			break
		}
	}
	return out, nil
}

// ReadAuxv reads /proc/PID/auxv.
func ReadAuxv(pid int) ([]uint64, error) {
	b, err := ReadRecord(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return nil, err
	}
	return ParseAuxv(b)
}

// ParseHex parses a file holding one hexadecimal number (personality).
func ParseHex(data []byte) (uint64, error) {
	s := strings.TrimSpace(string(data))
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", s, err)
	}
	return v, nil
}

// ReadPersonality reads /proc/PID/personality.
func ReadPersonality(pid int) (uint32, error) {
	b, err := ReadRecord(fmt.Sprintf("/proc/%d/personality", pid))
	if err != nil {
		return 0, err
	}
	v, err := ParseHex(b)
	return uint32(v), err
}

// ReadInt reads a file holding one decimal number that the kernel makes in
// one piece (oom_score_adj, loginuid: ReadRecord).
func ReadInt(path string) (int64, error) {
	b, err := ReadRecord(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}

// DeletedSuffix is what the kernel appends to the path of an unlinked file.
const DeletedSuffix = " (deleted)"

// TrimDeleted removes the " (deleted)" suffix. Whether a file is really
// deleted must be decided by its link count, not by this suffix.
func TrimDeleted(p string) string { return strings.TrimSuffix(p, DeletedSuffix) }

// NLimits is the number of resource limits (RLIM_NLIMITS).
const NLimits = 16

// ReadLimits reads every resource limit of pid from /proc/PID/limits: one
// file read instead of NLimits prlimit calls. The kernel prints the limits
// in RLIMIT_* order, one line each after a header, the name padded to 25
// columns, then soft and hard values ("unlimited" for RLIM_INFINITY).
func ReadLimits(pid int) ([NLimits]unix.Rlimit, error) {
	var out [NLimits]unix.Rlimit
	path := fmt.Sprintf("/proc/%d/limits", pid)
	b, err := ReadRecord(path)
	if err != nil {
		return out, err
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != NLimits+1 || !strings.HasPrefix(lines[0], "Limit ") {
		return out, fmt.Errorf("%s: %d lines, want a header and %d limits", path, len(lines), NLimits)
	}
	value := func(s string) (uint64, error) {
		if s == "unlimited" {
			return unix.RLIM_INFINITY, nil
		}
		return strconv.ParseUint(s, 10, 64)
	}
	for i, l := range lines[1:] {
		if len(l) < 26 || !strings.HasPrefix(l, "Max ") {
			return out, fmt.Errorf("%s: bad line %q", path, l)
		}
		f := strings.Fields(l[26:])
		if len(f) < 2 {
			return out, fmt.Errorf("%s: bad line %q", path, l)
		}
		if out[i].Cur, err = value(f[0]); err != nil {
			return out, fmt.Errorf("%s: line %q: %w", path, l, err)
		}
		if out[i].Max, err = value(f[1]); err != nil {
			return out, fmt.Errorf("%s: line %q: %w", path, l, err)
		}
	}
	return out, nil
}
