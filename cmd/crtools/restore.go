package main

import (
	"fmt"
	"hash/fnv"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/crtools/crtools/spec"
)

func init() { registerCommand("restore", newRestoreCommand) }

type restoreFlags struct {
	Tree           int
	Detached       bool
	Root           string
	EvasiveDevices bool
	VethPairs      [][2]string
	ActionScripts  []string
	TCPEstablished bool
	ShellJob       bool
	FileLocks      bool
	ExtUnixSk      bool
}

func newRestoreCommand(g *globalOptions) *cobra.Command {
	f := &restoreFlags{}
	c := &cobra.Command{
		Use:   "restore -D DIR [-d] [-t PID] [options]",
		Short: "restore previously checkpointed processes",
		Long: `Restore the process tree saved in the images directory, with the same
PIDs. Without -d crtools stays the parent of the restored root, waits for
it and exits with its status; with -d it exits once the tree runs. A
failed restore leaves no restored task behind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			job, err := restoreJob(g, f)
			if err != nil {
				return err
			}
			return runCLIJob(cmd, g, job)
		},
	}
	fl := c.Flags()
	fl.SortFlags = false
	fl.BoolVarP(&f.Detached, "restore-detached", "d", false, "detach crtools itself once restore is complete")
	fl.VarP(pidValue(&f.Tree), "tree", "t", "`PID` of the root task; must match the images")
	fl.StringVarP(&f.Root, "root", "r", "", "change the root filesystem to `PATH` (when run in mount namespace)")
	fl.BoolVar(&f.EvasiveDevices, "evasive-devices", false, "use any path to a device file if the original one is inaccessible")
	fl.Var(&vethValue{p: &f.VethPairs}, "veth-pair", "correspondence between inside and outside names of veth devices (repeatable)")
	fl.Lookup("veth-pair").DefValue = ""
	fl.StringArrayVar(&f.ActionScripts, "action-script", nil, "add an external action script `SCR` (CRTOOL_SCRIPT_ACTION names the action)")
	fl.BoolVar(&f.TCPEstablished, "tcp-established", false, "restore established TCP connections")
	fl.BoolVarP(&f.ShellJob, "shell-job", "j", false, "restore a shell job: inherit session and process group from crtools")
	fl.BoolVarP(&f.FileLocks, "file-locks", "l", false, "restore file locks")
	fl.BoolVarP(&f.ExtUnixSk, "ext-unix-sk", "x", false, "reconnect external unix sockets")
	return c
}

func restoreJob(g *globalOptions, f *restoreFlags) (*spec.Job, error) {
	d := g.ImagesDir
	if d == "" {
		d = "."
	}
	dir, err := filepath.Abs(d)
	if err != nil {
		return nil, failf("resolve images directory: %w", err)
	}
	rs := &spec.RestoreSpec{
		ImagesDir: spec.ImagesSource{Path: dir},
		Pid:       f.Tree,
		Detached:  f.Detached,
		Options: spec.Options{
			FileLocks:      f.FileLocks,
			TCPEstablished: f.TCPEstablished,
			ShellJob:       f.ShellJob,
			ExtUnixSockets: f.ExtUnixSk,
			EvasiveDevices: f.EvasiveDevices,
			Root:           f.Root,
		},
		Hooks: spec.Hooks{Scripts: absPaths(f.ActionScripts)},
	}
	for _, p := range f.VethPairs {
		rs.VethPairs = append(rs.VethPairs, spec.VethPair{Inside: p[0], Outside: p[1]})
	}
	return &spec.Job{
		APIVersion: spec.APIVersion,
		Kind:       spec.KindRestore,
		// The lock is per images directory: two restores of different
		// directories with the same base name must not exclude each other.
		Metadata: spec.Metadata{Name: restoreLockName(dir)},
		Restore:  rs,
		Source:   cliSource,
	}, nil
}

// restoreLockName names the lock of a command-line restore: the base name
// for people, and a 32-bit hash of the whole path so that directories with
// the same base name do not exclude each other. The hash guards against
// accidents, not adversaries (a collision only makes two restores take
// turns), so FNV-1a does: crypto/sha256 would link the crypto tree into
// crtools, whose package inits every command pays for at start-up.
func restoreLockName(dir string) string {
	h := fnv.New32a()
	h.Write([]byte(dir))
	return fmt.Sprintf("restore-%s-%08x", filepath.Base(dir), h.Sum32())
}
