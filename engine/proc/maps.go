package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mapping is one VMA as /proc/PID/smaps (or maps) shows it.
type Mapping struct {
	Start, End uint64
	Read       bool
	Write      bool
	Exec       bool
	Shared     bool // 's' in perms: MAP_SHARED (or a shared mapping made private-read-only)
	Offset     uint64
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
	// Path is the name the kernel printed, "\012" turned back into '\n'.
	// For file mappings it may end in " (deleted)"; pseudo names such as
	// "[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]",
	// "[anon:NAME]" and "[anon_shmem:NAME]" appear as printed.
	Path string
	// VmFlags is smaps' VmFlags line: two-letter flags separated by
	// spaces ("" with maps). Flag asks for one.
	VmFlags string
	// Rss and Swap in bytes (smaps only).
	Rss, Swap uint64
}

// Size is the length of the mapping in bytes.
func (m *Mapping) Size() uint64 { return m.End - m.Start }

// IsFile reports whether a file backs the mapping (a non-zero inode or
// device; anonymous shared memory is backed by a shmem file, too).
func (m *Mapping) IsFile() bool {
	return m.Inode != 0 || m.DevMajor != 0 || m.DevMinor != 0
}

// Flag reports whether VmFlags has flag f ("gd", "dd", ...).
func (m *Mapping) Flag(f string) bool {
	for rest := m.VmFlags; rest != ""; {
		var w string
		w, rest, _ = strings.Cut(rest, " ")
		if w == f {
			return true
		}
	}
	return false
}

// ParseMaps parses /proc/PID/maps or /proc/PID/smaps contents.
func ParseMaps(data []byte) ([]Mapping, error) {
	// Sized first: smaps has some 25 lines a mapping, and growing the
	// slice one mapping at a time left garbage of every size behind.
	n := 0
	for rest := data; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			i = len(rest) - 1
		}
		if isMapsHeader(rest[:i+1]) {
			n++
		}
		rest = rest[i+1:]
	}
	out := make([]Mapping, 0, n)
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) == 0 {
			continue
		}
		if isMapsHeader(line) {
			m, err := parseMapsLine(line)
			if err != nil {
				return nil, fmt.Errorf("parse maps: line %d: %w", lineNo, err)
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("parse maps: line %d: %q before the first mapping", lineNo, truncate(line))
		}
		cur := &out[len(out)-1]
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, fmt.Errorf("parse maps: line %d: unexpected %q", lineNo, truncate(line))
		}
		switch string(key) {
		case "VmFlags":
			// One string per mapping, not a map of flags: a dump parses
			// the smaps of every task.
			cur.VmFlags = joinFields(val)
			if cur.VmFlags == "" {
				cur.VmFlags = " " // a VmFlags line without flags
			}
		case "Rss", "Swap":
			// "  1234 kB"; split by hand: bytes.Fields allocates, and
			// every mapping of every task has both lines.
			num, rest := nextField(val)
			unit, rest := nextField(rest)
			if extra, _ := nextField(rest); len(num) == 0 || string(unit) != "kB" || len(extra) > 0 {
				return nil, fmt.Errorf("parse maps: line %d: bad %s value %q", lineNo, key, val)
			}
			v, err := strconv.ParseUint(string(num), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse maps: line %d: %s: %w", lineNo, key, err)
			}
			if string(key) == "Rss" {
				cur.Rss = v << 10
			} else {
				cur.Swap = v << 10
			}
		}
	}
	return out, nil
}

// joinFields is strings.Join(strings.Fields(string(b)), " ") for ASCII
// white space (VmFlags) with one allocation.
func joinFields(b []byte) string {
	out := make([]byte, 0, len(b))
	for f, rest := nextField(b); len(f) > 0; f, rest = nextField(rest) {
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, f...)
	}
	return string(out)
}

// nextField returns the first run of non-white-space bytes of b (ASCII
// white space) and what follows it; an empty field when there is none.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// isMapsHeader tells a "start-end perms ..." line from a "Key: value" line
// of smaps: headers start with lower-case hex digits and a '-'.
func isMapsHeader(line []byte) bool {
	i := 0
	for i < len(line) && isHexDigit(line[i]) {
		i++
	}
	return i > 0 && i < len(line) && line[i] == '-'
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}

// parseMapsLine parses "start-end perms offset maj:min inode   path".
// The path is everything after the inode and the padding spaces, so it
// may itself contain spaces (and leading spaces are lost: the kernel pads
// with spaces, which makes a leading space in a name undetectable here;
// map_files gives the exact name).
func parseMapsLine(line []byte) (Mapping, error) {
	var m Mapping
	rest := line
	next := func() (string, error) {
		rest = bytes.TrimLeft(rest, " ")
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			if len(rest) == 0 {
				return "", fmt.Errorf("short line %q", truncate(line))
			}
			f := rest
			rest = nil
			return string(f), nil
		}
		f := rest[:i]
		rest = rest[i+1:]
		return string(f), nil
	}
	rng, err := next()
	if err != nil {
		return m, err
	}
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, fmt.Errorf("bad range %q", rng)
	}
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("bad start %q", lo)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("bad end %q", hi)
	}
	if m.End <= m.Start {
		return m, fmt.Errorf("empty range %q", rng)
	}
	perms, err := next()
	if err != nil {
		return m, err
	}
	if len(perms) != 4 {
		return m, fmt.Errorf("bad perms %q", perms)
	}
	m.Read, m.Write, m.Exec = perms[0] == 'r', perms[1] == 'w', perms[2] == 'x'
	switch perms[3] {
	case 's':
		m.Shared = true
	case 'p':
	default:
		return m, fmt.Errorf("bad perms %q", perms)
	}
	off, err := next()
	if err != nil {
		return m, err
	}
	if m.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return m, fmt.Errorf("bad offset %q", off)
	}
	dev, err := next()
	if err != nil {
		return m, err
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return m, fmt.Errorf("bad device %q", dev)
	}
	v, err := strconv.ParseUint(maj, 16, 32)
	if err != nil {
		return m, fmt.Errorf("bad device %q", dev)
	}
	m.DevMajor = uint32(v)
	if v, err = strconv.ParseUint(min, 16, 32); err != nil {
		return m, fmt.Errorf("bad device %q", dev)
	}
	m.DevMinor = uint32(v)
	ino, err := next()
	if err != nil {
		return m, err
	}
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("bad inode %q", ino)
	}
	m.Path = UnescapeOctal(string(bytes.TrimLeft(rest, " ")))
	return m, nil
}

// UnescapeOctal turns the kernel's "\ooo" escapes (mangle_path, as in
// maps and mountinfo: \040 for a space) back into bytes.
func UnescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// ReadSmaps reads and parses /proc/PID/smaps.
func ReadSmaps(pid int) ([]Mapping, error) {
	path := fmt.Sprintf("/proc/%d/smaps", pid)
	var m []Mapping
	err := readPooledFrom(&smapsBufs, smapsBufSize, path, false, func(b []byte) (err error) {
		if m, err = ParseMaps(b); err != nil { // copies what it keeps
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
	return m, err
}

// MapFilePath returns the exact path of the file behind a mapping, read from
// the /proc/PID/map_files link (which needs CAP_SYS_ADMIN). A deleted file
// keeps the " (deleted)" suffix the kernel appends.
func MapFilePath(pid int, start, end uint64) (string, error) {
	return os.Readlink(MapFilesName(pid, start, end))
}

// MapFilesName is the /proc/PID/map_files/ entry of a mapping.
func MapFilesName(pid int, start, end uint64) string {
	return fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, start, end)
}
