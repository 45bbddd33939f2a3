package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
)

func init() { registerCommand("exec", newExecCommand) }

func newExecCommand(g *globalOptions) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "exec -t PID SYSCALL [ARG...]",
		Short: "execute a system call from another task's context",
		Long: `Run one system call in the task PID and print its return value, or
-ERRNO (NAME: message). SYSCALL is an x86-64 syscall name (getpid, open,
close, openat, ...) or number. An ARG starting with '&' is a string: the
rest of it is copied into the task (NUL-terminated, into a scratch mapping
removed afterwards) and its address is passed. Any other ARG is a number,
read like strtol with base 0: 0x1f, 017, -1.

Everything else about the task stays as it was: its registers, signal mask
and memory are put back, a syscall it was blocked in restarts, and a task
stopped by job control stays stopped.

Example: crtools exec -t 1234 open '&/foo/bar' 2`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pid == 0 {
				return usageErrorf("exec needs -t/--tree PID")
			}
			if len(args) == 0 {
				return usageErrorf("exec needs a SYSCALL name")
			}
			nr, err := parseSyscallName(args[0])
			if err != nil {
				return err
			}
			if len(args)-1 > 6 {
				return usageErrorf("%s: %d arguments given, a system call takes at most 6", args[0], len(args)-1)
			}
			xargs := make([]ptrace.ExecArg, 0, len(args)-1)
			for _, a := range args[1:] {
				xa, err := parseExecArg(a)
				if err != nil {
					return err
				}
				xargs = append(xargs, xa)
			}
			logs, err := openLogs(logConfig{File: g.LogFile, Level: g.Verbosity, Format: g.LogFormat, ImagesDir: g.ImagesDir},
				time.Now(), cmd.ErrOrStderr())
			if err != nil {
				return failf("%v", err)
			}
			defer logs.Close()
			tr := ptrace.NewTracer()
			defer tr.Close()
			res, err := ptrace.ExecSyscall(logs.Logger, tr, pid, nr, xargs)
			if err != nil {
				return failf("exec %s: %v", args[0], err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), formatExecResult(res))
			return nil
		},
	}
	fl := c.Flags()
	// Arguments after the syscall name are the syscall's, even "-1".
	fl.SetInterspersed(false)
	fl.VarP(pidValue(&pid), "tree", "t", "run the system call in the task `PID`")
	return c
}

// parseSyscallName accepts a name of the x86-64 table or a number.
func parseSyscallName(s string) (int, error) {
	if nr, ok := ptrace.SyscallNumber(s); ok {
		return nr, nil
	}
	if n, err := strconv.ParseUint(s, 0, 16); err == nil {
		return int(n), nil
	}
	return 0, usageErrorf("unknown system call %q (use an x86-64 name such as getpid, open, close, openat, or a number)", s)
}

// parseExecArg reads one syscall argument: "&string" or a number like
// strtol(s, NULL, 0) would (0x.. hex, 0.. octal, decimal, a sign), but
// refusing trailing garbage and values beyond 64 bits.
func parseExecArg(s string) (ptrace.ExecArg, error) {
	if rest, ok := strings.CutPrefix(s, "&"); ok {
		return ptrace.ExecArg{Str: &rest}, nil
	}
	body, neg := s, false
	if b, ok := strings.CutPrefix(body, "-"); ok {
		body, neg = b, true
	} else if b, ok := strings.CutPrefix(body, "+"); ok {
		body = b
	}
	if body == "" || strings.ContainsAny(body, "_+-") {
		return ptrace.ExecArg{}, usageErrorf("argument %q is neither a number nor an &string", s)
	}
	u, err := parseCNumber(body)
	if err != nil || (neg && u > -math.MinInt64) {
		return ptrace.ExecArg{}, usageErrorf("argument %q is neither a number nor an &string", s)
	}
	if neg {
		u = -u
	}
	return ptrace.ExecArg{Num: uintptr(u)}, nil
}

// parseCNumber reads an unsigned number with C's base prefixes: 0x/0X hex,
// a leading 0 octal, else decimal.
func parseCNumber(s string) (uint64, error) {
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		return strconv.ParseUint(s[2:], 16, 64)
	case len(s) > 1 && s[0] == '0':
		return strconv.ParseUint(s[1:], 8, 64)
	default:
		return strconv.ParseUint(s, 10, 64)
	}
}

// formatExecResult prints the return value as a signed number, an error as
// "-9 (EBADF: bad file descriptor)".
func formatExecResult(res ptrace.ExecResult) string {
	if res.Errno != 0 {
		return fmt.Sprintf("%d (%s: %s)", int64(res.Ret), unix.ErrnoName(res.Errno), res.Errno.Error())
	}
	return strconv.FormatInt(int64(res.Ret), 10)
}
