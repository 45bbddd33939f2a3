package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/crtools/crtools/spec"
)

func init() { registerCommand("dump", newDumpCommand) }

// dumpFlags are the dump options of crtools(1), plus -R.
type dumpFlags struct {
	Tree            int
	LeaveStopped    bool
	LeaveRunning    bool
	ExtUnixSk       bool
	Namespaces      []string
	Root            string
	EvasiveDevices  bool
	ActionScripts   []string
	LinkRemap       bool
	GhostLimit      int64
	TCPSkipInFlight bool
	TCPEstablished  bool
	ShellJob        bool
	FileLocks       bool
	PageServer      bool
	Address         string
	Port            int
	VethPairs       [][2]string // refused: restore only
}

func newDumpCommand(g *globalOptions) *cobra.Command {
	f := &dumpFlags{}
	c := &cobra.Command{
		Use:   "dump -t PID -D DIR [options]",
		Short: "checkpoint a process tree into an images directory",
		Long: `Checkpoint the process tree rooted at PID into the images directory. The
images are written under a temporary name and renamed into place once
complete; on any failure the tree is left running exactly as before.
By default the tree is killed after a good dump (-s: left stopped,
-R: left running).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			job, err := dumpJob(g, f, cmd)
			if err != nil {
				return err
			}
			return runCLIJob(cmd, g, job)
		},
	}
	fl := c.Flags()
	fl.SortFlags = false
	fl.VarP(pidValue(&f.Tree), "tree", "t", "checkpoint the whole process tree starting from `PID`")
	fl.BoolVarP(&f.LeaveStopped, "leave-stopped", "s", false, "leave tasks in stopped state after checkpoint instead of killing them")
	fl.BoolVarP(&f.LeaveRunning, "leave-running", "R", false, "leave tasks running after checkpoint instead of killing them")
	fl.BoolVarP(&f.ExtUnixSk, "ext-unix-sk", "x", false, "dump external unix sockets")
	fl.VarP(&nsListValue{p: &f.Namespaces}, "namespaces", "n", "checkpoint namespaces `NS`, separated by comma: uts, ipc, mnt, pid, net")
	fl.StringVarP(&f.Root, "root", "r", "", "change the root filesystem to `PATH` (when run in mount namespace)")
	fl.BoolVar(&f.EvasiveDevices, "evasive-devices", false, "use any path to a device file if the original one is inaccessible")
	fl.StringArrayVar(&f.ActionScripts, "action-script", nil, "add an external action script `SCR` (CRTOOL_SCRIPT_ACTION names the action)")
	fl.BoolVar(&f.LinkRemap, "link-remap", false, "allow to link unlinked files back when possible (modifies FS till restore)")
	// Not in crtools(1) (CRIU has it): the size above which a deleted
	// open file is refused instead of copied into the images.
	fl.Var(sizeValue{&f.GhostLimit}, "ghost-limit", "extension: copy deleted open files of up to `SIZE` bytes (K, M, G suffixes) into the images (default 1M; bigger ones need --link-remap)")
	fl.Lookup("ghost-limit").DefValue = ""
	fl.BoolVar(&f.TCPEstablished, "tcp-established", false, "checkpoint established TCP connections")
	// Not in crtools(1) (CRIU has it): by default a listener with
	// connections not accepted yet is refused, since they cannot be
	// saved and would be lost.
	fl.BoolVar(&f.TCPSkipInFlight, "tcp-skip-in-flight", false, "extension: dump TCP listeners even with connections not accepted yet; those connections are not kept (their clients see a reset)")
	fl.BoolVarP(&f.ShellJob, "shell-job", "j", false, "allow to dump shell jobs (a process attached to a terminal)")
	fl.BoolVarP(&f.FileLocks, "file-locks", "l", false, "allow to dump file locks")
	fl.BoolVar(&f.PageServer, "page-server", false, "send pages to a page server (see --address, --port)")
	fl.StringVar(&f.Address, "address", "", "page server `ADDRESS`")
	fl.Var(portValue(&f.Port), "port", "page server `PORT` number")
	// The man page lists --veth-pair among the common options; it only
	// means something to restore, so dump names that instead of calling
	// it an unknown flag.
	fl.Var(&vethValue{p: &f.VethPairs}, "veth-pair", "restore only: correspondence of veth device names (IN=OUT)")
	fl.Lookup("veth-pair").DefValue = ""
	return c
}

// dumpJob turns dump flags into the same Job a spec file would give.
func dumpJob(g *globalOptions, f *dumpFlags, cmd *cobra.Command) (*spec.Job, error) {
	if f.Tree == 0 {
		return nil, usageErrorf("dump needs -t/--tree PID")
	}
	if g.ImagesDir == "" {
		return nil, usageErrorf("dump needs -D/--images-dir DIR")
	}
	if f.LeaveStopped && f.LeaveRunning {
		return nil, usageErrorf("-s/--leave-stopped and -R/--leave-running exclude each other")
	}
	fl := cmd.Flags()
	if fl.Changed("veth-pair") {
		return nil, usageErrorf("--veth-pair applies to restore only (it maps veth device names when a network namespace is restored)")
	}
	if g.LogFile != "" && !filepath.IsAbs(g.LogFile) && filepath.Base(g.LogFile) != g.LogFile {
		// A relative log file goes inside the images directory, which a
		// dump creates only at its end: a sub-directory there cannot exist.
		return nil, usageErrorf("-o %s: a relative log file of dump must be a plain file name (it is written inside the images directory); give an absolute path to log elsewhere", g.LogFile)
	}
	if !f.PageServer && (fl.Changed("address") || fl.Changed("port")) {
		return nil, usageErrorf("--address and --port need --page-server")
	}
	if f.PageServer && (f.Address == "" || f.Port == 0) {
		return nil, usageErrorf("--page-server needs --address and --port")
	}
	dir, err := filepath.Abs(g.ImagesDir)
	if err != nil {
		return nil, failf("resolve images directory: %w", err)
	}
	cs := &spec.CheckpointSpec{
		Target:       spec.Target{Pid: f.Tree},
		ImagesDir:    dir,
		LeaveRunning: f.LeaveRunning,
		LeaveStopped: f.LeaveStopped,
		Options: spec.Options{
			FileLocks:       f.FileLocks,
			TCPEstablished:  f.TCPEstablished,
			ShellJob:        f.ShellJob,
			ExtUnixSockets:  f.ExtUnixSk,
			LinkRemap:       f.LinkRemap,
			GhostLimit:      f.GhostLimit,
			TCPSkipInFlight: f.TCPSkipInFlight,
			EvasiveDevices:  f.EvasiveDevices,
			Root:            f.Root,
		},
		Namespaces: f.Namespaces,
		Hooks:      spec.Hooks{Scripts: absPaths(f.ActionScripts)},
	}
	if f.PageServer {
		cs.PageServer = &spec.PageServer{Address: f.Address, Port: f.Port}
	}
	return &spec.Job{
		APIVersion: spec.APIVersion,
		Kind:       spec.KindCheckpoint,
		Metadata:   spec.Metadata{Name: fmt.Sprintf("dump-%d", f.Tree)},
		Checkpoint: cs,
		Source:     cliSource,
	}, nil
}

// absPaths makes script paths absolute: hooks run with the images
// directory's parent as working directory.
func absPaths(ps []string) []string {
	var out []string
	for _, p := range ps {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		out = append(out, p)
	}
	return out
}

// sizeValue is a size in bytes, with an optional K, M or G suffix (powers
// of 1024), greater than 0.
type sizeValue struct{ p *int64 }

func (v sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(*v.p, 10)
}
func (v sizeValue) Type() string { return "size" }
func (v sizeValue) Set(s string) error {
	mult := int64(1)
	num := strings.TrimSuffix(strings.ToUpper(s), "B")
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K':
			mult, num = 1<<10, num[:n-1]
		case 'M':
			mult, num = 1<<20, num[:n-1]
		case 'G':
			mult, num = 1<<30, num[:n-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("expected a size in bytes greater than 0, with an optional K, M or G suffix")
	}
	*v.p = n * mult
	return nil
}
