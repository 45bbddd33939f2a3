// Package engine is the checkpoint/restore engine: the only part of crtools
// that talks to the kernel. The executor drives it through the phased API in
// this file; each phase has an undo so that a plan can roll back (DESIGN.md,
// "Rollback contract").
//
// Sub-packages, one per mechanism:
//
//	engine/ptrace   the tracer goroutine (all ptrace calls of a tree), regs, syscall injection
//	engine/proc     /proc parsers
//	engine/image    CRIU image files: reading and writing (generated code in engine/image/pb)
//	engine/dump     freezing a tree and collecting its state into images
//	engine/restore  restore by puppets
//	engine/kernel   feature probes for `crtools check`
//	engine/show     human-readable and JSON rendering of images
//	engine/pageserver  the page server
package engine

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// ErrNotSupported is returned by engine features that are not implemented
// yet. Callers print it in one line and exit 1.
var ErrNotSupported = errors.New("not supported yet")

// FinishMode says what happens to the dumped tree once its images are safe.
type FinishMode int

const (
	// FinishKill kills the tree (the man page's default).
	FinishKill FinishMode = iota
	// FinishLeaveStopped leaves every task stopped (-s).
	FinishLeaveStopped
	// FinishLeaveRunning lets the tree run on (-R).
	FinishLeaveRunning
)

// PageServer names a page server to send pages to (dump) or to listen as.
type PageServer struct {
	Address string
	Port    int
}

// VethPair maps a veth device inside the restored netns to its outside name.
type VethPair struct {
	Inside, Outside string
}

// DumpOptions are the dump options of crtools(1).
type DumpOptions struct {
	Pid             int      // -t: root of the tree
	Namespaces      []string // -n: uts, ipc, mnt, pid, net
	Root            string   // -r
	ExtUnixSk       bool     // -x
	EvasiveDevices  bool
	LinkRemap       bool
	TCPEstablished  bool
	ShellJob        bool  // -j
	FileLocks       bool  // -l
	GhostLimit      int64 // largest deleted file whose contents go into the images; 0: default (1 MiB)
	TCPSkipInFlight bool  // --tcp-skip-in-flight: connections not accepted yet on a TCP listener are dropped, not refused
	PageServer      *PageServer
	ActionScripts   []string
	Log             zerolog.Logger
	// PidLog, if set, gives the logger for work on one process
	// (--log-pid: one file per process); nil: use Log.
	PidLog func(pid int) zerolog.Logger
	// Progress, if set, is called now and then while memory is copied.
	Progress func(done, total int64)
	// KillAtFinish: a good dump will end in Finish(FinishKill). The
	// engine may then leave in the tasks what only a task that runs on
	// would miss (engine/dump: the injections' batch memory, one small
	// mapping a process), saving work in the frozen window; Resume and
	// any other Finish still take it away.
	KillAtFinish bool
}

// RestoreOptions are the restore options of crtools(1).
type RestoreOptions struct {
	ImagesDir      string
	Pid            int  // -t: if non-zero, must match the image's root
	Detached       bool // -d
	Root           string
	EvasiveDevices bool
	TCPEstablished bool
	ShellJob       bool
	FileLocks      bool
	VethPairs      []VethPair
	ActionScripts  []string
	// Log, and PidLog and the loggers it gives, must be safe for
	// concurrent use (zerolog.SyncWriter): restore may work on two
	// processes at once (engine/restore/lanes.go).
	Log zerolog.Logger
	// PidLog, if set, gives the logger for work on one process
	// (--log-pid); nil: use Log.
	PidLog func(pid int) zerolog.Logger
	// Progress, if set, is called now and then while memory is copied.
	// It may be called from several goroutines at once, and a call may
	// report less done than one before it.
	Progress func(done, total int64)
}

// Dumper checkpoints one process tree in phases. The executor calls
// Freeze, Collect, WriteImages, then Finish; if anything fails before
// Finish it calls Resume, which leaves every task exactly as it was.
// Methods may be called from any goroutine; ptrace work is handed to the
// tracer goroutine internally. Close releases everything (and resumes the
// tree if neither Finish nor Resume ran).
type Dumper interface {
	// Freeze seizes and stops every thread of every task of the tree,
	// looping until no new task or thread appears. Undo: Resume.
	Freeze(ctx context.Context) error
	// Collect reads the state of the frozen tree. It changes nothing.
	Collect(ctx context.Context) error
	// WriteImages writes the image files into dir (which exists and is
	// empty), memory pages included, and fsyncs them.
	WriteImages(ctx context.Context, dir string) error
	// Resume lets every task carry on as if nothing happened.
	Resume() error
	// Finish kills, leaves stopped, or resumes the tree after a good dump.
	Finish(mode FinishMode) error
	// Pids lists the tasks of the frozen tree (valid after Freeze).
	Pids() []int
	Close() error
}

// Restorer restores a tree from images in phases. The executor calls
// Load, CreateTasks, RestoreState, Resume; if anything fails after
// CreateTasks it calls Kill, which leaves no restored task behind.
type Restorer interface {
	// Load reads and checks every image. It changes nothing.
	Load(ctx context.Context) error
	// CreateTasks waits (bounded) for the dumped PIDs to be free, then
	// creates a stopped puppet for every task and thread. Undo: Kill.
	CreateTasks(ctx context.Context) error
	// RestoreState turns each puppet into its dumped task.
	RestoreState(ctx context.Context) error
	// Resume sets the final registers and lets every task run.
	Resume(ctx context.Context) error
	// Kill kills every task created so far.
	Kill() error
	// RootPid is the PID of the restored root task.
	RootPid() int
	// Wait waits for the root task to exit (when not detached) and returns
	// its exit status as a shell would (128+signal for a signal).
	Wait() (int, error)
	Close() error
}

// Factory functions, set by the packages that implement them (engine/dump
// and engine/restore register themselves in their init). Keeping them as
// variables lets the executor be tested with fakes and keeps this package
// free of import cycles.
var (
	NewDumper   func(opts DumpOptions) (Dumper, error)
	NewRestorer func(opts RestoreOptions) (Restorer, error)
)
