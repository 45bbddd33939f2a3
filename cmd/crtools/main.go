package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/cmd/crtools/internal/handoff"
	"github.com/crtools/crtools/cmd/crtools/internal/prefault"
)

func main() {
	// crtools lives for a moment with a small live heap but allocates
	// briskly (images, /proc reads): with the default GOGC the collector
	// runs every few MiB and takes a tenth of a dump's CPU. GOGC in the
	// environment still wins. (Before prefault.Heap: the object it places
	// to move the allocator's front counts until the first collection.)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	// A job allocates a few MiB, every page of it fresh: have them mapped
	// in one go (see package prefault for the figures).
	if runsJob(os.Args[1:]) {
		prefault.Heap()
	}
	// CRTOOLS_CPUPROFILE=FILE writes a pprof CPU profile of this run
	// (go tool pprof crtools FILE): where a dump or restore spends its time.
	if path := os.Getenv("CRTOOLS_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				handoff.Exit(code)
			}
			f.Close()
		}
	}
	// The address space is torn down after the caller's wait returns
	// (package handoff).
	handoff.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs the command and turns its error into one line on
// stderr and an exit code. Tests call it in-process.
func run(args []string, stdout, stderr io.Writer) int {
	g := &globalOptions{}
	// The job commands catch SIGINT and SIGTERM (runJob); that is set up
	// on another goroutine from here on, while the arguments are parsed.
	if runsJob(args) {
		g.signals = catchSignals()
		defer func() {
			if g.signals != nil { // no job ran
				g.signals.release()
			}
		}()
	}
	root, args := rootFor(g, args)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)

	// --close comes before anything else (man page). It is parsed here by
	// hand because cobra parses flags only when it runs the command.
	for _, fd := range closeFds(args) {
		if fd > 2 {
			unix.Close(fd)
		}
	}

	err := root.Execute()
	if err == nil || errors.Is(err, errVersionShown) {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		switch {
		case ee.quiet:
		case ee.multiline:
			fmt.Fprintf(stderr, "crtools: %s\n", strings.TrimSpace(ee.err.Error()))
		default:
			fmt.Fprintf(stderr, "crtools: %s\n", oneLine(ee.err.Error()))
		}
		return ee.code
	}
	// Everything else is a usage error: from cobra's parsing (unknown
	// command or option, malformed value) or from our own checks.
	cmdPath := "crtools"
	if c, _, ferr := root.Find(args); ferr == nil && c != nil {
		cmdPath = c.CommandPath()
	}
	fmt.Fprintf(stderr, "crtools: %s\nRun '%s --help'.\n", oneLine(err.Error()), cmdPath)
	return exitUsage
}

// runsJob tells whether args name a command that runs a job (dump,
// restore, apply).
func runsJob(args []string) bool {
	return len(args) > 0 && (args[0] == "dump" || args[0] == "restore" || args[0] == "apply")
}

// oneLine keeps a message on one line (cobra and pflag messages can carry
// a trailing newline).
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.ReplaceAll(s, "\n", "; ")
}

// closeFds finds --close values in args without a full parse.
func closeFds(args []string) []int {
	var fds []int
	for i, a := range args {
		var v string
		switch {
		case a == "--":
			return fds
		case a == "--close" && i+1 < len(args):
			v = args[i+1]
		case strings.HasPrefix(a, "--close="):
			v = strings.TrimPrefix(a, "--close=")
		default:
			continue
		}
		var fd int
		if _, err := fmt.Sscanf(v, "%d", &fd); err == nil && fd >= 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}
