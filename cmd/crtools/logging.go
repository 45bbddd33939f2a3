package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

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
type textWriter struct {
	w io.Writer
}

var levelLetter = map[string]string{
	"trace": "T", "debug": "D", "info": "I", "warn": "W", "error": "E", "fatal": "F", "panic": "P",
}

func (t *textWriter) Write(p []byte) (int, error) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return t.w.Write(p)
	}
	var b strings.Builder
	if ts, ok := m["t"].(json.Number); ok {
		f, _ := ts.Float64()
		fmt.Fprintf(&b, "(%09.6f) ", f)
	}
	if lv, ok := m["level"].(string); ok {
		if s := levelLetter[lv]; s != "" {
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
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
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
