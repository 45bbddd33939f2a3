// Package spec owns crtools job specs: the Go types of a job, loading them
// from YAML (yaml.v3, so every error can name file:line:column) and
// validating them against the JSON Schema embedded from schemas/. The CLI
// commands build the same Job from their flags, so `crtools dump ...` and
// `crtools apply job.yaml` run the same planner and executor.
package spec

import (
	"fmt"
	"strings"
	"time"
)

// APIVersion is the only spec version this crtools understands.
const APIVersion = "crtools/v1"

// Kinds of job.
const (
	KindCheckpoint = "Checkpoint"
	KindRestore    = "Restore"
)

// Job is one YAML document: a checkpoint or a restore.
type Job struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	// Exactly one of these is set, according to Kind.
	Checkpoint *CheckpointSpec `yaml:"-" json:"checkpoint,omitempty"`
	Restore    *RestoreSpec    `yaml:"-" json:"restore,omitempty"`

	// Source says where the job came from ("job.yaml#2", "command line"),
	// for messages. BaseDir anchors relative paths of the spec (its file's
	// directory; the working directory for command-line jobs).
	Source  string `yaml:"-" json:"-"`
	BaseDir string `yaml:"-" json:"-"`
}

// Metadata names a job. The name keys the per-recipe lock.
type Metadata struct {
	Name        string            `yaml:"name" json:"name"`
	Labels      map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Description string            `yaml:"description,omitempty" json:"description,omitempty"`
}

// CheckpointSpec is spec: of kind Checkpoint.
type CheckpointSpec struct {
	Target Target `yaml:"target" json:"target"`
	// ImagesDir may contain {{ .Time }} (a sortable UTC timestamp) and
	// {{ .Name }} (metadata.name).
	ImagesDir    string      `yaml:"imagesDir" json:"imagesDir"`
	LeaveRunning bool        `yaml:"leaveRunning,omitempty" json:"leaveRunning,omitempty"`
	LeaveStopped bool        `yaml:"leaveStopped,omitempty" json:"leaveStopped,omitempty"`
	Options      Options     `yaml:"options,omitempty" json:"options,omitempty"`
	Namespaces   []string    `yaml:"namespaces,omitempty" json:"namespaces,omitempty"`
	Hooks        Hooks       `yaml:"hooks,omitempty" json:"hooks,omitempty"`
	Retention    *Retention  `yaml:"retention,omitempty" json:"retention,omitempty"`
	Log          *Log        `yaml:"log,omitempty" json:"log,omitempty"`
	PageServer   *PageServer `yaml:"pageServer,omitempty" json:"pageServer,omitempty"`
}

// Target is the root of the tree to checkpoint: exactly one field is set.
type Target struct {
	Pid     int         `yaml:"pid,omitempty" json:"pid,omitempty"`
	PidFile string      `yaml:"pidFile,omitempty" json:"pidFile,omitempty"`
	Exec    *ExecTarget `yaml:"exec,omitempty" json:"exec,omitempty"`
}

// ExecTarget launches a program (in its own session, stdin from
// /dev/null) and waits until it is ready before checkpointing it.
type ExecTarget struct {
	Command []string          `yaml:"command" json:"command"`
	Dir     string            `yaml:"dir,omitempty" json:"dir,omitempty"`
	Env     map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Stdout and Stderr are files the program writes to (appended);
	// empty: /dev/null. Relative paths are relative to the spec file.
	Stdout string `yaml:"stdout,omitempty" json:"stdout,omitempty"`
	Stderr string `yaml:"stderr,omitempty" json:"stderr,omitempty"`
	Ready  Ready  `yaml:"ready,omitempty" json:"ready,omitempty"`
}

// Ready says when a launched program is ready. All conditions given must
// hold; none: ready at once.
type Ready struct {
	TCPPort int      `yaml:"tcpPort,omitempty" json:"tcpPort,omitempty"`
	File    string   `yaml:"file,omitempty" json:"file,omitempty"`
	Delay   Duration `yaml:"delay,omitempty" json:"delay,omitempty"`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Options are the man page's dump/restore switches.
type Options struct {
	FileLocks       bool   `yaml:"fileLocks,omitempty" json:"fileLocks,omitempty"`
	TCPEstablished  bool   `yaml:"tcpEstablished,omitempty" json:"tcpEstablished,omitempty"`
	ShellJob        bool   `yaml:"shellJob,omitempty" json:"shellJob,omitempty"`
	ExtUnixSockets  bool   `yaml:"extUnixSockets,omitempty" json:"extUnixSockets,omitempty"`
	LinkRemap       bool   `yaml:"linkRemap,omitempty" json:"linkRemap,omitempty"`
	EvasiveDevices  bool   `yaml:"evasiveDevices,omitempty" json:"evasiveDevices,omitempty"`
	Root            string `yaml:"root,omitempty" json:"root,omitempty"`
	GhostLimit      int64  `yaml:"ghostLimit,omitempty" json:"ghostLimit,omitempty"`
	TCPSkipInFlight bool   `yaml:"tcpSkipInFlight,omitempty" json:"tcpSkipInFlight,omitempty"`
}

// Hook is a command run at one point of a job. A hook that exits non-zero
// or outlives its timeout fails its step. Undo, if given, runs when a
// later step fails and the job rolls back.
type Hook struct {
	Run     []string `yaml:"run" json:"run"`
	Undo    []string `yaml:"undo,omitempty" json:"undo,omitempty"`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Hooks of a job. Scripts are --action-script programs: each runs at every
// action with CRTOOL_SCRIPT_ACTION set (and must ignore actions it does
// not know, as with CRIU).
type Hooks struct {
	PreDump       *Hook    `yaml:"preDump,omitempty" json:"preDump,omitempty"`
	PostDump      *Hook    `yaml:"postDump,omitempty" json:"postDump,omitempty"`
	NetworkLock   *Hook    `yaml:"networkLock,omitempty" json:"networkLock,omitempty"`
	NetworkUnlock *Hook    `yaml:"networkUnlock,omitempty" json:"networkUnlock,omitempty"`
	PreRestore    *Hook    `yaml:"preRestore,omitempty" json:"preRestore,omitempty"`
	PostRestore   *Hook    `yaml:"postRestore,omitempty" json:"postRestore,omitempty"`
	PostExit      *Hook    `yaml:"postExit,omitempty" json:"postExit,omitempty"`
	Scripts       []string `yaml:"scripts,omitempty" json:"scripts,omitempty"`
	// Timeout for every hook that has none of its own; 0: 60s.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Retention prunes old snapshots after a successful one.
type Retention struct {
	KeepLast   int      `yaml:"keepLast,omitempty" json:"keepLast,omitempty"`
	KeepWithin Duration `yaml:"keepWithin,omitempty" json:"keepWithin,omitempty"`
}

// Log is a job's own log.
type Log struct {
	File   string `yaml:"file,omitempty" json:"file,omitempty"`
	Level  *int   `yaml:"level,omitempty" json:"level,omitempty"`
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
	PerPid bool   `yaml:"perPid,omitempty" json:"perPid,omitempty"`
}

// PageServer is where a dump sends its pages.
type PageServer struct {
	Address string `yaml:"address" json:"address"`
	Port    int    `yaml:"port" json:"port"`
}

// RestoreSpec is spec: of kind Restore.
type RestoreSpec struct {
	ImagesDir ImagesSource `yaml:"imagesDir" json:"imagesDir"`
	// Pid, if set, must match the root of the images.
	Pid       int        `yaml:"pid,omitempty" json:"pid,omitempty"`
	Detached  bool       `yaml:"detached,omitempty" json:"detached,omitempty"`
	VethPairs []VethPair `yaml:"vethPairs,omitempty" json:"vethPairs,omitempty"`
	Options   Options    `yaml:"options,omitempty" json:"options,omitempty"`
	Hooks     Hooks      `yaml:"hooks,omitempty" json:"hooks,omitempty"`
	Log       *Log       `yaml:"log,omitempty" json:"log,omitempty"`
}

// ImagesSource is a plain path or {latestIn: DIR}: the newest complete
// snapshot in DIR.
type ImagesSource struct {
	Path     string `json:"path,omitempty"`
	LatestIn string `json:"latestIn,omitempty"`
}

// VethPair maps a veth device inside the restored net namespace to its
// name outside.
type VethPair struct {
	Inside  string `yaml:"inside" json:"inside"`
	Outside string `yaml:"outside" json:"outside"`
}

// Duration is a time.Duration written as "30s", "24h" in specs.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes "30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// ParseDuration accepts Go durations plus a day unit ("7d").
func ParseDuration(s string) (Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil && fmt.Sprint(days) == n {
			return Duration(time.Duration(days) * 24 * time.Hour), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as 30s, 5m, 24h or 7d")
	}
	return Duration(d), nil
}

// Name returns the job's name for messages and locks.
func (j *Job) Name() string { return j.Metadata.Name }
