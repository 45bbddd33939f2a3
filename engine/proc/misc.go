package proc

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
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
	b, err := ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
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
	b, err := ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
	if err != nil {
		return 0, err
	}
	v, err := ParseHex(b)
	return uint32(v), err
}

// ReadInt reads a file holding one decimal number (oom_score_adj, loginuid).
func ReadInt(path string) (int64, error) {
	b, err := ReadFile(path)
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
