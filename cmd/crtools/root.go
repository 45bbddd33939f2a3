// Command crtools checkpoints and restores Linux process trees.
//
// This package is thin: it parses flags, builds a spec.Job and hands it to
// the planner and executor. Each command lives in its own file and adds
// itself with registerCommand from an init function.
package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is printed by -V/--version. Release builds set it with
// -ldflags "-X main.version=...".
var version = "0.0.2-dev"

// commandFactory makes the sub-command called name.
type commandFactory struct {
	name string
	make func(g *globalOptions) *cobra.Command
}

// commandFactories are the constructors of the sub-commands, added by the
// files of this package in their init functions.
var commandFactories []commandFactory

// registerCommand adds the constructor of the sub-command called name (the
// first word of its Use). Call it from init.
func registerCommand(name string, f func(g *globalOptions) *cobra.Command) {
	commandFactories = append(commandFactories, commandFactory{name, f})
}

// globalOptions are the options every command takes (-D, -o, -v, ...).
type globalOptions struct {
	ImagesDir string // -D
	LogFile   string // -o
	Verbosity int    // -v
	LogPid    bool   // --log-pid
	LogFormat string // --log-format text|json
	Close     []int  // --close: descriptors of crtools itself to close first
	Version   bool   // -V

	// signals: SIGINT and SIGTERM caught since run started, for the
	// first job of a dump, restore or apply (runJob takes it).
	signals *jobSignals
}

// Exit codes of crtools (issue 6; also in README).
const (
	exitOK         = 0
	exitFailed     = 1 // failed, fully rolled back
	exitUsage      = 2 // invalid spec or usage
	exitIncomplete = 3 // failed and rollback incomplete
	exitLocked     = 4 // recipe locked by another run
)

// exitError carries an exit code out of a command's RunE. Errors that
// reach main without one come from cobra's parsing and are usage errors.
type exitError struct {
	code int
	err  error
	// quiet: the message was already printed (e.g. a journal).
	quiet bool
	// multiline: print the message as it is (one problem per line).
	multiline bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is a usage error: exit 2 with a hint to --help.
func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// failf is a plain failure: exit 1.
func failf(format string, args ...any) error {
	return &exitError{code: exitFailed, err: fmt.Errorf(format, args...)}
}

// errVersionShown stops a command after -V printed the version.
var errVersionShown = errors.New("version shown")

// newRootCommand builds the whole command tree with fresh option values.
func newRootCommand(g *globalOptions) *cobra.Command {
	return newRoot(g, commandFactories)
}

// rootFor builds the command tree args need, and puts the command word
// first (reorderArgs). When args start with a command word, as in
// `crtools dump -t PID -D DIR`, only that command is built: the other
// commands, their flags and check's feature list are work (and memory
// touched) in every run for nothing, and reorderArgs leaves such args as
// they are. Anything else (options before the command, help, an unknown
// command with its suggestions) gets the whole tree.
func rootFor(g *globalOptions, args []string) (*cobra.Command, []string) {
	if len(args) > 0 {
		for _, f := range commandFactories {
			if f.name == args[0] {
				return newRoot(g, []commandFactory{f}), args
			}
		}
	}
	root := newRootCommand(g)
	return root, reorderArgs(root, args)
}

// newRoot builds the root command with the given sub-commands.
func newRoot(g *globalOptions, commands []commandFactory) *cobra.Command {
	root := &cobra.Command{
		Use:   "crtools <command> [options]",
		Short: "checkpoint/restore in userspace",
		Long: `crtools checkpoints a running Linux process tree into a directory of image
files and restores it later, so that the processes carry on from where they
stopped. Options may stand before or after the command.

Exit codes: 0 done; 1 failed (and rolled back); 2 usage error or invalid spec;
3 failed and rollback incomplete; 4 recipe locked by another run.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.Version {
				return nil // printed by PersistentPreRunE
			}
			return usageErrorf("no command given")
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.Version {
				fmt.Fprintf(cmd.OutOrStdout(), "Version: %s\n", version)
				return errVersionShown
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err}
	})
	pf := root.PersistentFlags()
	pf.StringVarP(&g.ImagesDir, "images-dir", "D", "", "use `PATH` as the base directory of the dump files set")
	pf.StringVarP(&g.LogFile, "log-file", "o", "", "write logging messages to `FILE` (a relative path is inside the images directory)")
	pf.VarP(&rangeIntValue{p: &g.Verbosity, min: 0, max: 2, what: "a log level 0, 1 or 2"}, "verbosity", "v",
		"set logging level to `NUM`: 0 errors only, 1 informative (default), 2 debug")
	g.Verbosity = 1
	pf.Lookup("verbosity").DefValue = "1"
	pf.BoolVar(&g.LogPid, "log-pid", false, "write separate logging files per each pid (FILE.PID)")
	pf.Var(&choiceValue{p: &g.LogFormat, choices: []string{"text", "json"}}, "log-format", "log line `FORMAT`: text or json")
	g.LogFormat = "text"
	pf.Lookup("log-format").DefValue = "text"
	pf.Var(&fdListValue{p: &g.Close}, "close", "close file with descriptor `FD` before anything else (repeatable)")
	pf.Lookup("close").DefValue = ""
	pf.BoolVarP(&g.Version, "version", "V", false, "print program version")
	root.Flags().BoolP("help", "h", false, "print inline help")

	for _, f := range commands {
		c := f.make(g)
		c.Flags().BoolP("help", "h", false, "print inline help for "+c.Name())
		root.AddCommand(c)
	}
	return root
}

// valueFlags collects, over every command, which long and short options
// take a value. reorderArgs needs it to tell an option's value from the
// command word.
func valueFlags(root *cobra.Command) (long, short map[string]bool) {
	long, short = map[string]bool{}, map[string]bool{}
	add := func(f *pflag.Flag) {
		takes := f.NoOptDefVal == ""
		long[f.Name] = long[f.Name] || takes
		if f.Shorthand != "" {
			short[f.Shorthand] = short[f.Shorthand] || takes
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return long, short
}

// reorderArgs moves the command word to the front, so that options may
// stand before it as in the man page (`crtools -D d -t 5 dump`). Only the
// first word that is not an option or an option's value is considered.
func reorderArgs(root *cobra.Command, args []string) []string {
	long, short := valueFlags(root)
	names := map[string]bool{}
	for _, c := range root.Commands() {
		names[c.Name()] = true
		for _, a := range c.Aliases {
			names[a] = true
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return args
		case strings.HasPrefix(a, "--"):
			if !strings.Contains(a, "=") && long[a[2:]] {
				i++ // the next word is this option's value
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// A cluster of short options: the first one that takes a
			// value takes the rest of the word, or the next word.
			for j := 1; j < len(a); j++ {
				if short[a[j:j+1]] {
					if j == len(a)-1 {
						i++
					}
					break
				}
			}
		default:
			if !names[a] || i == 0 {
				return args
			}
			out := make([]string, 0, len(args))
			out = append(out, a)
			out = append(out, args[:i]...)
			return append(out, args[i+1:]...)
		}
	}
	return args
}

// rangeIntValue is an integer option with bounds and a clear message.
type rangeIntValue struct {
	p        *int
	min, max int
	what     string
}

func (v *rangeIntValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
func (v *rangeIntValue) Type() string { return "int" }
func (v *rangeIntValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("expected %s", v.what)
	}
	*v.p = n
	return nil
}

// pidValue is a process ID (-t).
func pidValue(p *int) *rangeIntValue {
	return &rangeIntValue{p: p, min: 1, max: 1<<22 - 1, what: "a process ID (a positive number)"}
}

// portValue is a TCP port (--port).
func portValue(p *int) *rangeIntValue {
	return &rangeIntValue{p: p, min: 1, max: 65535, what: "a port number between 1 and 65535"}
}

// choiceValue is one of a fixed set of words.
type choiceValue struct {
	p       *string
	choices []string
}

func (v *choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v *choiceValue) Type() string { return "string" }
func (v *choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("expected one of %s", strings.Join(v.choices, ", "))
}

// fdListValue collects file descriptor numbers (--close, repeatable).
type fdListValue struct{ p *[]int }

func (v *fdListValue) String() string {
	if v.p == nil {
		return "[]"
	}
	return fmt.Sprint(*v.p)
}
func (v *fdListValue) Type() string { return "int" }
func (v *fdListValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("expected a file descriptor number")
	}
	*v.p = append(*v.p, n)
	return nil
}

// vethValue collects --veth-pair IN=OUT.
type vethValue struct{ p *[][2]string }

func (v *vethValue) String() string {
	if v.p == nil || len(*v.p) == 0 {
		return "[]"
	}
	var s []string
	for _, p := range *v.p {
		s = append(s, p[0]+"="+p[1])
	}
	return strings.Join(s, ",")
}
func (v *vethValue) Type() string { return "IN=OUT" }
func (v *vethValue) Set(s string) error {
	in, out, ok := strings.Cut(s, "=")
	if !ok || in == "" || out == "" || strings.ContainsAny(s, " /") || len(in) > 15 || len(out) > 15 {
		return fmt.Errorf("expected IN=OUT, two interface names (at most 15 characters each)")
	}
	*v.p = append(*v.p, [2]string{in, out})
	return nil
}

// nsListValue is -n/--namespaces: a comma separated list.
type nsListValue struct{ p *[]string }

var knownNamespaces = []string{"uts", "ipc", "mnt", "pid", "net"}

func (v *nsListValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v *nsListValue) Type() string { return "NS[,NS...]" }
func (v *nsListValue) Set(s string) error {
	for _, n := range strings.Split(s, ",") {
		ok := false
		for _, k := range knownNamespaces {
			ok = ok || n == k
		}
		if !ok {
			return fmt.Errorf("unknown namespace %q, expected some of %s", n, strings.Join(knownNamespaces, ","))
		}
		*v.p = append(*v.p, n)
	}
	return nil
}
