package files

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/crtools/crtools/engine/proc"
)

// fdinfo is /proc/PID/fdinfo/FD parsed: the common head plus every other
// line kept in order (kind-specific lines, some repeated: tfd, inotify wd,
// lock).
type fdinfo struct {
	Pos   int64
	Flags uint32 // f_flags | O_CLOEXEC when the descriptor has close-on-exec
	MntID int
	Ino   uint64
	Lines []string
}

func readFdinfo(pid, fd int) (*fdinfo, error) {
	b, err := proc.ReadRecord(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return nil, fmt.Errorf("read fdinfo of fd %d of pid %d: %w", fd, pid, err)
	}
	fi, err := parseFdinfo(string(b))
	if err != nil {
		return nil, fmt.Errorf("parse fdinfo of fd %d of pid %d: %w", fd, pid, err)
	}
	return fi, nil
}

func parseFdinfo(s string) (*fdinfo, error) {
	fi := &fdinfo{}
	seenFlags := false
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			fi.Lines = append(fi.Lines, line)
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "pos":
			fi.Pos, err = strconv.ParseInt(v, 10, 64)
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(v, 8, 32)
			fi.Flags, seenFlags = uint32(f), true
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(v)
		case "ino":
			fi.Ino, err = strconv.ParseUint(v, 10, 64)
		default:
			fi.Lines = append(fi.Lines, line)
		}
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
	}
	if !seenFlags {
		return nil, fmt.Errorf("no flags line")
	}
	return fi, nil
}

// value returns the value of the first "key:" line.
func (fi *fdinfo) value(key string) (string, bool) {
	for _, l := range fi.Lines {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// withPrefix returns the lines that start with prefix, prefix removed.
func (fi *fdinfo) withPrefix(prefix string) []string {
	var out []string
	for _, l := range fi.Lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			out = append(out, rest)
		}
	}
	return out
}

// fields splits "a:1 b:2 c: 3" style text into key → value. A key may be
// followed by spaces before its value ("events: 19").
func fields(s string) map[string]string {
	m := map[string]string{}
	toks := strings.Fields(s)
	for i := 0; i < len(toks); i++ {
		k, v, ok := strings.Cut(toks[i], ":")
		if !ok {
			continue
		}
		if v == "" && i+1 < len(toks) && !strings.Contains(toks[i+1], ":") {
			v = toks[i+1]
			i++
		}
		m[k] = v
	}
	return m
}

func hexField(m map[string]string, k string) (uint64, error) {
	v, ok := m[k]
	if !ok {
		return 0, fmt.Errorf("no %q", k)
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q: %w", k, err)
	}
	return n, nil
}

func decField(m map[string]string, k string) (int64, error) {
	v, ok := m[k]
	if !ok {
		return 0, fmt.Errorf("no %q", k)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q: %w", k, err)
	}
	return n, nil
}
