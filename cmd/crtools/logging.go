package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// logConfig says where and how a command logs. It comes from -o, -v,
// --log-pid, --log-format, or from a job spec's `log:` section.
type logConfig struct {
	File   string // "" : stderr only
	Level  int    // 0 errors, 1 info, 2 debug
	Format string // text or json
	PerPid bool   // one file per process: FILE.PID
	// ImagesDir anchors a relative File, as in CRIU.
	ImagesDir string
	// Pending: the images directory does not exist yet (a dump writes it
	// under a temporary name and renames it into place). The log then
	// starts next to it as "<dir>.<file>" and moves inside on success;
	// after a failure it stays there, where the error message points.
	Pending bool
}

// logs owns the log files of one command or job.
type logs struct {
	cfg    logConfig
	start  time.Time
	level  zerolog.Level
	stderr io.Writer

	mu      sync.Mutex
	dir     string // where the files are now
	prefix  string // file name prefix while Pending
	files   map[string]*os.File
	Logger  zerolog.Logger
	mainLog string // path of the main log file, "" when on stderr
}

func zerologLevel(v int) zerolog.Level {
	switch {
	case v <= 0:
		return zerolog.ErrorLevel
	case v == 1:
		return zerolog.InfoLevel
	default:
		return zerolog.DebugLevel
	}
}

// openLogs opens the main log. Lines carry the time since start.
func openLogs(cfg logConfig, start time.Time, stderr io.Writer) (*logs, error) {
	l := &logs{cfg: cfg, start: start, level: zerologLevel(cfg.Level), stderr: stderr, files: map[string]*os.File{}}
	if cfg.File == "" && cfg.Level <= 0 {
		// -v 0 on stderr: a failure is reported by crtools' own final
		// "crtools: ..." line (with what was rolled back); error log
		// lines there would only say the same thing again.
		l.level = zerolog.Disabled
	}
	var w io.Writer = stderr
	if cfg.File != "" {
		path := cfg.File
		if !filepath.IsAbs(path) && cfg.ImagesDir != "" {
			if cfg.Pending {
				dir := filepath.Clean(cfg.ImagesDir)
				l.dir = filepath.Dir(dir)
				l.prefix = filepath.Base(dir) + "."
				path = filepath.Join(l.dir, l.prefix+path)
				if err := os.MkdirAll(l.dir, 0o755); err != nil {
					return nil, fmt.Errorf("create log directory %s: %w", l.dir, err)
				}
			} else {
				path = filepath.Join(cfg.ImagesDir, path)
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		l.files[path] = f
		l.mainLog = path
		w = f
	}
	l.Logger = l.newLogger(w)
	return l, nil
}

func (l *logs) newLogger(w io.Writer) zerolog.Logger {
	if l.cfg.Format != "json" {
		w = &textWriter{w: w}
	}
	start := l.start
	return zerolog.New(zerolog.SyncWriter(w)).Level(l.level).Hook(zerolog.HookFunc(
		func(e *zerolog.Event, _ zerolog.Level, _ string) {
			e.Float64("t", time.Since(start).Seconds())
		}))
}

// PidLogger returns the logger for the work on one process: with
// --log-pid and a log file, lines go to FILE.PID, else to the main log.
func (l *logs) PidLogger(pid int) zerolog.Logger {
	if !l.cfg.PerPid || l.mainLog == "" {
		return l.Logger.With().Int("pid", pid).Logger()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	path := fmt.Sprintf("%s.%d", l.mainLog, pid)
	f := l.files[path]
	if f == nil {
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			l.Logger.Error().Err(err).Msg("open per-pid log; logging to the main log")
			return l.Logger.With().Int("pid", pid).Logger()
		}
		l.files[path] = f
	}
	return l.newLogger(f).With().Int("pid", pid).Logger()
}

// Commit moves pending log files into the images directory once it has
// been renamed into place.
func (l *logs) Commit(finalDir string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.prefix == "" {
		return
	}
	names := make([]string, 0, len(l.files))
	for p := range l.files {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		base := strings.TrimPrefix(filepath.Base(p), l.prefix)
		np := filepath.Join(finalDir, base)
		if err := os.Rename(p, np); err != nil {
			continue // stays next to the images dir
		}
		l.files[np] = l.files[p]
		delete(l.files, p)
		if p == l.mainLog {
			l.mainLog = np
		}
	}
	l.prefix = ""
}

// Path is where the main log is now ("" for stderr).
func (l *logs) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mainLog
}

func (l *logs) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		f.Close()
	}
}

// textWriter turns zerolog's JSON lines into CRIU-like text:
//
//	(00.012345) I: freeze tree pid=1234
//
// Its loggers wrap it in zerolog.SyncWriter: one Write at a time, so the
// buffers are reused from line to line.
type textWriter struct {
	w      io.Writer
	line   []byte
	fields []logField
}

func levelLetter(level []byte) string {
	switch string(level) {
	case "trace":
		return "T"
	case "debug":
		return "D"
	case "info":
		return "I"
	case "warn":
		return "W"
	case "error":
		return "E"
	case "fatal":
		return "F"
	case "panic":
		return "P"
	}
	return ""
}

func (t *textWriter) Write(p []byte) (int, error) {
	// zerolog's lines are flat objects of strings, numbers and booleans:
	// scanned by hand into reused buffers, they cost a fraction of
	// decoding each into a map with encoding/json, and allocate nothing
	// (in a run too short for a garbage collection every allocation is
	// fresh memory, a page fault per 4 KiB). Anything else takes the
	// general path, which gives the same text.
	line, fields, ok := appendTextLineFlat(t.line[:0], p, t.fields[:0])
	t.line, t.fields = line[:0], fields[:0]
	if !ok {
		s, ok := textLineJSON(p)
		if !ok {
			return t.w.Write(p)
		}
		line = []byte(s)
	}
	if _, err := t.w.Write(line); err != nil {
		return 0, err
	}
	return len(p), nil
}

// logField is one member of a flat JSON object: its key and either a
// string (str, unescaped) or the text of a number, true, false or null.
// Both point into the line or into unescaped, a buffer of their own.
type logField struct {
	key, val []byte
	str      bool
}

// appendTextLineFlat appends to dst the text textLineJSON gives for a
// zerolog line whose values are all scalars; ok is false for any other
// input. fields is scratch space, returned for reuse.
func appendTextLineFlat(dst, p []byte, fields []logField) (_ []byte, _ []logField, ok bool) {
	fields, ok = scanFlatObject(p, fields)
	if !ok {
		return dst, fields, false
	}
	// Sorted by key; of repeated keys the last one counts, as in a map.
	slices.SortStableFunc(fields, func(a, b logField) int { return bytes.Compare(a.key, b.key) })
	kept := fields[:0] // in place: each write is at or before the field read
	for i := range fields {
		if i+1 < len(fields) && bytes.Equal(fields[i+1].key, fields[i].key) {
			continue
		}
		kept = append(kept, fields[i])
	}
	fields = kept
	var ts, level, msg *logField
	for i := range fields {
		f := &fields[i]
		switch string(f.key) {
		case "t":
			ts = f
		case "level":
			level = f
		case "message":
			msg = f
		}
	}
	if ts != nil && !ts.str && ts.val[0] != 'n' && ts.val[0] != 't' && ts.val[0] != 'f' {
		x, err := strconv.ParseFloat(string(ts.val), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return dst, fields, false
		}
		dst = appendSeconds(dst, x)
	}
	if level != nil && level.str {
		if s := levelLetter(level.val); s != "" {
			dst = append(dst, s...)
			dst = append(dst, ": "...)
		}
	}
	if msg != nil && msg.str {
		dst = append(dst, msg.val...)
	}
	for i := range fields {
		f := &fields[i]
		switch string(f.key) {
		case "t", "level", "message":
			continue
		}
		dst = append(dst, ' ')
		dst = append(dst, f.key...)
		dst = append(dst, '=')
		if f.str && (len(f.val) == 0 || bytes.ContainsAny(f.val, " \t\n\"=")) {
			dst = strconv.AppendQuote(dst, string(f.val))
		} else {
			dst = append(dst, f.val...)
		}
	}
	return append(dst, '\n'), fields, true
}

// appendSeconds appends "(%09.6f) " of x, as fmt would, without fmt for
// the usual case (not negative, finite).
func appendSeconds(dst []byte, x float64) []byte {
	if !(x >= 0 && x <= math.MaxFloat64) {
		return fmt.Appendf(dst, "(%09.6f) ", x)
	}
	dst = append(dst, '(')
	at := len(dst)
	dst = strconv.AppendFloat(dst, x, 'f', 6, 64)
	if n := len(dst) - at; n < 9 {
		dst = append(dst, "000000000"[:9-n]...)
		copy(dst[at+9-n:], dst[at:at+n])
		copy(dst[at:at+9-n], "000000000")
	}
	return append(dst, ") "...)
}

// scanFlatObject parses p as one JSON object (then only white space) whose
// keys and string values need no unescaping but \" and \\, and whose other
// values are numbers, true, false or null. ok is false for anything else:
// nested values, other escapes, invalid UTF-8, malformed JSON.
func scanFlatObject(p []byte, fields []logField) ([]logField, bool) {
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return fields, false
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return fields, skipSpace(p, i+1) == len(p)
	}
	for {
		var f logField
		var ok bool
		if i >= len(p) || p[i] != '"' {
			return fields, false
		}
		if f.key, i, ok = scanString(p, i); !ok {
			return fields, false
		}
		i = skipSpace(p, i)
		if i >= len(p) || p[i] != ':' {
			return fields, false
		}
		i = skipSpace(p, i+1)
		if i >= len(p) {
			return fields, false
		}
		if p[i] == '"' {
			f.str = true
			if f.val, i, ok = scanString(p, i); !ok {
				return fields, false
			}
		} else {
			j := i
			for j < len(p) && (p[j] == '-' || p[j] == '+' || p[j] == '.' || p[j] >= '0' && p[j] <= '9' || p[j] >= 'a' && p[j] <= 'z' || p[j] == 'E') {
				j++
			}
			f.val = p[i:j]
			if !scalarLiteral(f.val) {
				return fields, false
			}
			i = j
		}
		fields = append(fields, f)
		i = skipSpace(p, i)
		if i >= len(p) {
			return fields, false
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			return fields, skipSpace(p, i+1) == len(p)
		default:
			return fields, false
		}
	}
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r') {
		i++
	}
	return i
}

// scanString reads the JSON string starting at p[i] (a quote). Only the
// escapes \" and \\ are taken (unescaped into a new slice); control
// characters and invalid UTF-8 are refused.
func scanString(p []byte, i int) ([]byte, int, bool) {
	i++
	start := i
	escaped := false
	for ; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '"':
			s := p[start:i]
			if !utf8.Valid(s) {
				return nil, 0, false
			}
			if !escaped {
				return s, i + 1, true
			}
			out := make([]byte, 0, len(s))
			for k := 0; k < len(s); k++ {
				if s[k] == '\\' {
					k++
				}
				out = append(out, s[k])
			}
			return out, i + 1, true
		case c == '\\':
			if i+1 >= len(p) || (p[i+1] != '"' && p[i+1] != '\\') {
				return nil, 0, false
			}
			escaped = true
			i++
		case c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// scalarLiteral reports whether s is true, false, null or a JSON number.
func scalarLiteral(s []byte) bool {
	switch string(s) {
	case "true", "false", "null":
		return true
	case "":
		return false
	}
	i := 0
	if s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// textLineJSON formats any JSON object line: decoded into a map, keys
// sorted, strings quoted when they hold a blank, a quote or '=', other
// values as JSON. ok is false when p is no JSON object.
func textLineJSON(p []byte) (string, bool) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return "", false
	}
	var b strings.Builder
	if ts, ok := m["t"].(json.Number); ok {
		f, _ := ts.Float64()
		fmt.Fprintf(&b, "(%09.6f) ", f)
	}
	if lv, ok := m["level"].(string); ok {
		if s := levelLetter([]byte(lv)); s != "" {
			b.WriteString(s + ": ")
		}
	}
	if msg, ok := m["message"].(string); ok {
		b.WriteString(msg)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "t" && k != "level" && k != "message" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		var s string
		switch v := v.(type) {
		case string:
			s = v
			if s == "" || strings.ContainsAny(s, " \t\n\"=") {
				s = fmt.Sprintf("%q", s)
			}
		default:
			j, _ := json.Marshal(v)
			s = string(j)
		}
		fmt.Fprintf(&b, " %s=%s", k, s)
	}
	b.WriteByte('\n')
	return b.String(), true
}

// isTerminal reports whether w is a terminal; the progress bar is only
// drawn on one.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
