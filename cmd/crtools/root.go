// Command crtools checkpoints and restores Linux process trees.
//
// This package is thin: it parses flags, builds a spec.Job and hands it to
// the planner and executor. Each command lives in its own file and adds
// itself with registerCommand from an init function.
package main

import (
	"github.com/spf13/cobra"
)

// commandFactories are the constructors of the sub-commands, added by the
// files of this package in their init functions.
var commandFactories []func(g *globalOptions) *cobra.Command

// registerCommand adds a sub-command constructor. Call it from init.
func registerCommand(f func(g *globalOptions) *cobra.Command) {
	commandFactories = append(commandFactories, f)
}

// globalOptions are the options every command takes (-D, -o, -v, ...).
type globalOptions struct {
	ImagesDir string // -D
	LogFile   string // -o
	Verbosity int    // -v
	LogPid    bool   // --log-pid
	LogFormat string // --log-format text|json
}
