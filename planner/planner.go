// Package planner turns a job into an ordered plan of steps. It is pure:
// no /proc, no syscalls, no files (it imports neither os nor the engine),
// so `crtools plan` shows exactly what `apply` will do and golden tests
// pin it. Every step says what it does and how it is undone; the executor
// maps each step's Kind to an action and its undo.
package planner

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/crtools/crtools/spec"
)

// Kind says which action the executor runs for a step.
type Kind string

// Step kinds.
const (
	KindLock          Kind = "lock"
	KindResolveTarget Kind = "resolve-target"
	KindHook          Kind = "hook"
	KindFreeze        Kind = "freeze"
	KindCollect       Kind = "collect"
	KindTempDir       Kind = "create-temp-dir"
	KindWriteImages   Kind = "write-images"
	KindCommit        Kind = "commit"
	KindFinish        Kind = "finish"
	KindRetention     Kind = "retention"
	KindUnlock        Kind = "unlock"
	KindPickImages    Kind = "pick-images"
	KindLoad          Kind = "load"
	KindCreateTasks   Kind = "create-tasks"
	KindRestoreState  Kind = "restore-state"
	KindResume        Kind = "resume"
	KindWait          Kind = "wait"
)

// Finish modes of a checkpoint.
const (
	FinishKill         = "kill"
	FinishLeaveStopped = "leave-stopped"
	FinishLeaveRunning = "leave-running"
)

// Hook actions, as CRTOOL_SCRIPT_ACTION names them.
const (
	ActionPreDump       = "pre-dump"
	ActionPostDump      = "post-dump"
	ActionNetworkLock   = "network-lock"
	ActionNetworkUnlock = "network-unlock"
	ActionPreRestore    = "pre-restore"
	ActionPostRestore   = "post-restore"
	ActionPostExit      = "post-exit"
)

// Step is one thing the executor does.
type Step struct {
	// Name is unique within a plan (fault injection and journals use it).
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Description says what the step does; Undo how a rollback undoes it
	// ("" when there is nothing to undo).
	Description string `json:"description"`
	Undo        string `json:"undo,omitempty"`
	// Irreversible: once this step has completed, a later failure undoes
	// neither it nor any step before it (e.g. the tree was killed; its
	// images must stay).
	Irreversible bool `json:"irreversible,omitempty"`
	// Optional: a failure is a warning in the journal, not a job failure
	// (pruning old snapshots must never cost the new one).
	Optional bool `json:"optional,omitempty"`
	// Action and Hook are set for KindHook.
	Action string     `json:"action,omitempty"`
	Hook   *spec.Hook `json:"-"`
}

// Plan is the ordered steps of one job plus the values they share.
type Plan struct {
	Job   *spec.Job `json:"-"`
	Kind  string    `json:"kind"`
	Name  string    `json:"name"`
	Steps []Step    `json:"steps"`

	// Checkpoint: the final images directory (template expanded), the
	// directory holding the recipe's snapshots, and what happens to the
	// tree after a good dump.
	ImagesDir    string `json:"imagesDir,omitempty"`
	SnapshotsDir string `json:"snapshotsDir,omitempty"`
	Finish       string `json:"finish,omitempty"`
	// Restore: where to take images from (a path, or the newest complete
	// snapshot in LatestIn).
	LatestIn string `json:"latestIn,omitempty"`
}

// NotSupportedError is a spec field that is valid but whose engine does
// not exist yet. `plan` and `apply` fail with it rather than ignore it.
type NotSupportedError struct {
	Field string
	What  string
	// Flag is the command-line option that sets Field ("" if none), so
	// that a job built from flags names the option, not the spec path.
	Flag string
	// Hint says what to do instead ("" if nothing).
	Hint string
}

func (e *NotSupportedError) Error() string {
	return fmt.Sprintf("%s: %s", e.Field, e.Message())
}

// Message is the error without the spec field.
func (e *NotSupportedError) Message() string {
	m := e.What + " is not supported yet"
	if e.Hint != "" {
		m += "; " + e.Hint
	}
	return m
}

// Build plans one job. now fills {{ .Time }}.
func Build(job *spec.Job, now time.Time) (*Plan, error) {
	switch {
	case job.Checkpoint != nil:
		return checkpointPlan(job, now)
	case job.Restore != nil:
		return restorePlan(job)
	}
	return nil, fmt.Errorf("plan job %q: kind %q has no spec", job.Name(), job.Kind)
}

func quoteCmd(words []string) string {
	var q []string
	for _, w := range words {
		if n := strings.Count(strings.TrimSpace(w), "\n"); n > 0 {
			// A script: its first line stands for it.
			first, _, _ := strings.Cut(strings.TrimSpace(w), "\n")
			w = fmt.Sprintf("%s ...(%d more lines)", first, n)
		}
		if w == "" || strings.ContainsAny(w, " \t\n'\"$\\*?;&|<>()") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		q = append(q, w)
	}
	return strings.Join(q, " ")
}

// hookStep plans a hook action if the job has a hook or action scripts.
func hookStep(action string, h *spec.Hook, hooks spec.Hooks) (Step, bool) {
	if h == nil && len(hooks.Scripts) == 0 {
		return Step{}, false
	}
	var parts []string
	if len(hooks.Scripts) > 0 {
		parts = append(parts, fmt.Sprintf("action scripts %s", strings.Join(hooks.Scripts, ", ")))
	}
	if h != nil {
		parts = append(parts, quoteCmd(h.Run))
	}
	timeout := 60 * time.Second
	if hooks.Timeout > 0 {
		timeout = hooks.Timeout.D()
	}
	if h != nil && h.Timeout > 0 {
		timeout = h.Timeout.D()
	}
	s := Step{
		Name:        "hook-" + action,
		Kind:        KindHook,
		Action:      action,
		Hook:        h,
		Description: fmt.Sprintf("run the %s hook: %s (timeout %s)", action, strings.Join(parts, "; then "), shortDuration(timeout)),
	}
	if h != nil && len(h.Undo) > 0 {
		s.Undo = "run " + quoteCmd(h.Undo)
	}
	return s, true
}

func lockSteps(name string) (Step, Step) {
	return Step{
			Name:        "lock",
			Kind:        KindLock,
			Description: fmt.Sprintf("take the lock of recipe %q (another run of it exits at once with code 4)", name),
			Undo:        "release the lock",
		}, Step{
			Name:        "unlock",
			Kind:        KindUnlock,
			Description: "release the lock",
		}
}

// writeDescription says where the images go. With a page server the
// memory pages go there (it stores them when the dump flushes, and a
// rollback here cannot take them back) and the other images stay local.
func writeDescription(ps *spec.PageServer) string {
	if ps == nil {
		return "write the image files and memory pages into the temporary directory"
	}
	return fmt.Sprintf("write the image files into the temporary directory and send the memory pages to the page server at %s "+
		"(it stores them once all are sent; a later failure does not remove them there)",
		net.JoinHostPort(ps.Address, strconv.Itoa(ps.Port)))
}

func checkpointPlan(job *spec.Job, now time.Time) (*Plan, error) {
	c := job.Checkpoint
	// The network lock crtools implements is the one of established TCP
	// connections (engine/netlock); without them there is nothing to lock.
	if (c.Hooks.NetworkLock != nil || c.Hooks.NetworkUnlock != nil) && !c.Options.TCPEstablished {
		return nil, &NotSupportedError{Field: "spec.hooks.networkLock", What: "locking the network (network-lock hooks)"}
	}
	// Refuse what the engine does not implement rather than write images
	// that silently lack it.
	if err := unsupportedOptions(c.Options); err != nil {
		return nil, err
	}
	// engine/ns checkpoints the uts, ipc, pid, net and mnt namespaces.
	var nsBad []string
	for _, n := range c.Namespaces {
		if n != "uts" && n != "ipc" && n != "pid" && n != "net" && n != "mnt" {
			nsBad = append(nsBad, n)
		}
	}
	if len(nsBad) > 0 {
		return nil, &NotSupportedError{Field: "spec.namespaces", Flag: "-n/--namespaces",
			What: "checkpointing namespaces (" + strings.Join(nsBad, ", ") + ")", Hint: "uts, ipc, pid, net and mnt are supported"}
	}
	dir, err := spec.ExpandImagesDir(c.ImagesDir, spec.TemplateData{Time: spec.SnapshotTime(now), Name: job.Name()})
	if err != nil {
		return nil, fmt.Errorf("spec.imagesDir: %w", err)
	}
	dir = filepath.Clean(dir)
	p := &Plan{Job: job, Kind: job.Kind, Name: job.Name(), ImagesDir: dir, SnapshotsDir: filepath.Dir(dir)}
	lock, unlock := lockSteps(job.Name())
	p.Steps = append(p.Steps, lock)

	t := c.Target
	rs := Step{Name: "resolve-target", Kind: KindResolveTarget}
	switch {
	case t.Pid != 0:
		rs.Description = fmt.Sprintf("check that process %d exists and can be checkpointed", t.Pid)
	case t.PidFile != "":
		rs.Description = fmt.Sprintf("read the PID of the tree's root from %s", t.PidFile)
	case t.Exec != nil:
		var conds []string
		r := t.Exec.Ready
		if r.TCPPort != 0 {
			conds = append(conds, fmt.Sprintf("TCP port %d accepts connections", r.TCPPort))
		}
		if r.File != "" {
			conds = append(conds, fmt.Sprintf("%s exists", r.File))
		}
		if r.Delay > 0 {
			conds = append(conds, fmt.Sprintf("%s have passed", shortDuration(r.Delay.D())))
		}
		ready := "at once"
		if len(conds) > 0 {
			timeout := 30 * time.Second
			if r.Timeout > 0 {
				timeout = r.Timeout.D()
			}
			ready = fmt.Sprintf("until %s (timeout %s)", strings.Join(conds, " and "), shortDuration(timeout))
		}
		rs.Description = fmt.Sprintf("launch %s in a new session and wait %s", quoteCmd(t.Exec.Command), ready)
		rs.Undo = "kill the launched program"
	default:
		return nil, fmt.Errorf("spec.target: expected one of pid, pidFile, exec")
	}
	p.Steps = append(p.Steps, rs)

	if s, ok := hookStep(ActionPreDump, c.Hooks.PreDump, c.Hooks); ok {
		p.Steps = append(p.Steps, s)
	}
	var opts []string
	o := c.Options
	for _, x := range []struct {
		on   bool
		name string
	}{{o.ExtUnixSockets, "external unix sockets"}, {o.FileLocks, "file locks"}, {o.TCPEstablished, "established TCP"},
		{o.ShellJob, "shell job"}, {o.LinkRemap, "link remap"}, {o.EvasiveDevices, "evasive devices"}} {
		if x.on {
			opts = append(opts, x.name)
		}
	}
	if len(c.Namespaces) > 0 {
		opts = append(opts, "namespaces "+strings.Join(c.Namespaces, ","))
	}
	if o.Root != "" {
		opts = append(opts, "root "+o.Root)
	}
	with := ""
	if len(opts) > 0 {
		with = " (with " + strings.Join(opts, ", ") + ")"
	}
	tmp := filepath.Join(p.SnapshotsDir, TempDirPrefix(p.Name)+filepath.Base(dir)+".tmp-*")
	p.Steps = append(p.Steps,
		Step{Name: "freeze", Kind: KindFreeze,
			Description: "freeze the process tree: seize and stop every thread of every task",
			Undo:        "resume every task exactly as it was"},
	)
	if c.Options.TCPEstablished {
		// As CRIU: the network-lock action runs once the tree is frozen,
		// before its sockets are read (the engine locks each connection
		// as it dumps it).
		if s, ok := hookStep(ActionNetworkLock, c.Hooks.NetworkLock, c.Hooks); ok {
			p.Steps = append(p.Steps, s)
		}
	}
	p.Steps = append(p.Steps,
		Step{Name: "collect", Kind: KindCollect,
			Description: "collect the state of the frozen tree" + with},
		Step{Name: "create-temp-dir", Kind: KindTempDir,
			Description: fmt.Sprintf("create the temporary images directory %s", tmp),
			Undo:        "remove the temporary images directory"},
		Step{Name: "write-images", Kind: KindWriteImages, Description: writeDescription(c.PageServer)},
		Step{Name: "commit", Kind: KindCommit,
			Description: fmt.Sprintf("mark the images complete, fsync them and rename the temporary directory to %s", dir),
			Undo:        fmt.Sprintf("remove %s", dir)},
	)
	fin := Step{Name: "finish", Kind: KindFinish}
	switch {
	case c.LeaveRunning:
		p.Finish = FinishLeaveRunning
		fin.Description = "let the tree run on (leaveRunning)"
	case c.LeaveStopped:
		p.Finish = FinishLeaveStopped
		fin.Description = "leave every task of the tree stopped (leaveStopped)"
		fin.Undo = "continue every task (SIGCONT)"
	default:
		p.Finish = FinishKill
		fin.Description = "kill the tree (the images are complete)"
		fin.Irreversible = true
	}
	p.Steps = append(p.Steps, fin)
	if c.Options.TCPEstablished && p.Finish != FinishKill {
		// The tree goes on: its connections are unlocked again.
		if s, ok := hookStep(ActionNetworkUnlock, c.Hooks.NetworkUnlock, c.Hooks); ok {
			p.Steps = append(p.Steps, s)
		}
	}
	if s, ok := hookStep(ActionPostDump, c.Hooks.PostDump, c.Hooks); ok {
		p.Steps = append(p.Steps, s)
	}
	if r := c.Retention; r != nil {
		var keep []string
		if r.KeepLast > 0 {
			keep = append(keep, fmt.Sprintf("the newest %d", r.KeepLast))
		}
		if r.KeepWithin > 0 {
			keep = append(keep, fmt.Sprintf("those younger than %s", shortDuration(r.KeepWithin.D())))
		}
		p.Steps = append(p.Steps, Step{Name: "retention", Kind: KindRetention, Optional: true,
			Description: fmt.Sprintf("prune this recipe's complete snapshots in %s, oldest first, keeping %s (and always the newest one and any another depends on)",
				p.SnapshotsDir, strings.Join(keep, " and ")),
			Undo: ""})
	}
	p.Steps = append(p.Steps, unlock)
	return p, nil
}

func restorePlan(job *spec.Job) (*Plan, error) {
	r := job.Restore
	if r.Hooks.NetworkUnlock != nil && !r.Options.TCPEstablished {
		return nil, &NotSupportedError{Field: "spec.hooks.networkUnlock", What: "unlocking the network (network-unlock hooks)"}
	}
	// options.root is the -r directory a mount namespace is rebuilt
	// under (engine/ns); the engine refuses it for images without one.
	p := &Plan{Job: job, Kind: job.Kind, Name: job.Name()}
	lock, unlock := lockSteps(job.Name())
	p.Steps = append(p.Steps, lock)
	pick := Step{Name: "pick-images", Kind: KindPickImages}
	if r.ImagesDir.LatestIn != "" {
		p.LatestIn = filepath.Clean(r.ImagesDir.LatestIn)
		pick.Description = fmt.Sprintf("pick the newest complete snapshot in %s", p.LatestIn)
	} else {
		p.ImagesDir = filepath.Clean(r.ImagesDir.Path)
		pick.Description = fmt.Sprintf("use the images in %s", p.ImagesDir)
	}
	p.Steps = append(p.Steps, pick)
	if s, ok := hookStep(ActionPreRestore, r.Hooks.PreRestore, r.Hooks); ok {
		p.Steps = append(p.Steps, s)
	}
	create := "create every task and thread of the tree with its dumped PID, as stopped puppets"
	if r.Pid != 0 {
		create += fmt.Sprintf(" (the root must be PID %d)", r.Pid)
	}
	state := "restore memory, files, signals, credentials and registers of every task"
	if len(r.VethPairs) > 0 {
		var vp []string
		for _, v := range r.VethPairs {
			vp = append(vp, v.Inside+"="+v.Outside)
		}
		state += "; veth pairs " + strings.Join(vp, ", ") + " (the outside names of the veth devices of a network namespace in the images; nothing to map without one)"
	}
	p.Steps = append(p.Steps,
		Step{Name: "load", Kind: KindLoad, Description: "read and check every image"},
		Step{Name: "create-tasks", Kind: KindCreateTasks, Description: create,
			Undo: "kill every restored task (and remove links created for it)"},
		Step{Name: "restore-state", Kind: KindRestoreState, Description: state},
		Step{Name: "resume", Kind: KindResume, Description: "let every restored task run"},
	)
	if r.Options.TCPEstablished {
		// The engine unlocked each connection as it restored it; the
		// network-unlock action follows once every task runs.
		if s, ok := hookStep(ActionNetworkUnlock, r.Hooks.NetworkUnlock, r.Hooks); ok {
			p.Steps = append(p.Steps, s)
		}
	}
	if s, ok := hookStep(ActionPostRestore, r.Hooks.PostRestore, r.Hooks); ok {
		p.Steps = append(p.Steps, s)
	}
	if !r.Detached {
		p.Steps = append(p.Steps, Step{Name: "wait", Kind: KindWait, Irreversible: true,
			Description: "wait for the restored root task to exit and report its status"})
		if s, ok := hookStep(ActionPostExit, r.Hooks.PostExit, r.Hooks); ok {
			p.Steps = append(p.Steps, s)
		}
	}
	p.Steps = append(p.Steps, unlock)
	return p, nil
}

// Format renders a plan as numbered, human-readable steps.
func (p *Plan) Format() string {
	var b strings.Builder
	src := ""
	if p.Job != nil && p.Job.Source != "" {
		src = " from " + p.Job.Source
	}
	fmt.Fprintf(&b, "Plan for %s %q%s:\n", p.Kind, p.Name, src)
	width := len(fmt.Sprint(len(p.Steps)))
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "  %*d. %-17s %s\n", width, i+1, s.Name, s.Description)
		pad := strings.Repeat(" ", 2+width+2+17+1)
		switch {
		case s.Irreversible:
			fmt.Fprintf(&b, "%sundo: none; point of no return: a later failure keeps this and every earlier step\n", pad)
		case s.Optional:
			fmt.Fprintf(&b, "%sundo: none; a failure here is a warning, not a rollback\n", pad)
		case s.Undo != "":
			fmt.Fprintf(&b, "%sundo: %s\n", pad, s.Undo)
		}
	}
	return b.String()
}

// shortDuration prints 1m rather than 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// unsupportedOptions refuses options the engine does not implement yet,
// rather than run without them.
func unsupportedOptions(o spec.Options) error {
	switch {
	case o.Root != "":
		return &NotSupportedError{Field: "spec.options.root", Flag: "-r/--root", What: "changing the root filesystem at checkpoint time (-r/--root)",
			Hint: "-r is implemented for restore, where it gives the root of the restored mount namespace"}
	}
	return nil
}

// TempDirPrefix starts the name of a checkpoint's temporary images
// directory (.RECIPE~FINAL.tmp-*, made by the executor): "~" cannot occur
// in a recipe's name, so the prefix names one recipe only.
func TempDirPrefix(name string) string { return "." + name + "~" }
