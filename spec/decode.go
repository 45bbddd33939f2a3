package spec

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML reads "30s", "24h", "7d".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalYAML reads a hook as a list of words or as {run, undo, timeout}.
func (h *Hook) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		return n.Decode(&h.Run)
	}
	type plain Hook
	return n.Decode((*plain)(h))
}

// UnmarshalYAML reads a path or {latestIn: DIR}.
func (s *ImagesSource) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Path = n.Value
		return nil
	}
	var v struct {
		LatestIn string `yaml:"latestIn"`
	}
	if err := n.Decode(&v); err != nil {
		return err
	}
	s.LatestIn = v.LatestIn
	return nil
}

// String renders the source for plans and messages.
func (s ImagesSource) String() string {
	if s.LatestIn != "" {
		return "newest complete snapshot in " + s.LatestIn
	}
	return s.Path
}

// decodeJob decodes a document that passed the schema into a Job, checks
// what the schema cannot say, and makes relative paths absolute.
func decodeJob(file string, root *yaml.Node, baseDir string) (*Job, Errors) {
	var doc struct {
		APIVersion string    `yaml:"apiVersion"`
		Kind       string    `yaml:"kind"`
		Metadata   Metadata  `yaml:"metadata"`
		Spec       yaml.Node `yaml:"spec"`
	}
	errAt := func(n *yaml.Node, path, msg string) Errors {
		return Errors{{File: file, Line: n.Line, Column: n.Column, Path: path, Msg: msg}}
	}
	if err := root.Decode(&doc); err != nil {
		return nil, errAt(root, "", err.Error())
	}
	job := &Job{APIVersion: doc.APIVersion, Kind: doc.Kind, Metadata: doc.Metadata, BaseDir: baseDir}
	sp := &doc.Spec
	var errs Errors
	switch doc.Kind {
	case KindCheckpoint:
		c := &CheckpointSpec{}
		if err := sp.Decode(c); err != nil {
			return nil, errAt(sp, "spec", err.Error())
		}
		job.Checkpoint = c
		if c.LeaveRunning && c.LeaveStopped {
			n := keyNode(sp, "leaveStopped")
			errs = append(errs, errAt(n, "spec.leaveStopped", "leaveRunning and leaveStopped exclude each other")...)
		}
		if err := CheckImagesDirTemplate(c.ImagesDir, c.Retention != nil); err != nil {
			n := nodeAt(sp, []string{"imagesDir"})
			errs = append(errs, errAt(n, "spec.imagesDir", err.Error())...)
		}
		if c.Retention != nil && c.Retention.KeepLast == 0 && c.Retention.KeepWithin == 0 {
			n := nodeAt(sp, []string{"retention"})
			errs = append(errs, errAt(n, "spec.retention", "expected keepLast (at least 1) or keepWithin (a positive duration)")...)
		}
		if r := c.Target.Exec; r != nil && r.Ready.Timeout < 0 {
			n := nodeAt(sp, []string{"target", "exec", "ready", "timeout"})
			errs = append(errs, errAt(n, "spec.target.exec.ready.timeout", "expected a positive duration")...)
		}
		resolveCheckpointPaths(c, baseDir)
	case KindRestore:
		r := &RestoreSpec{}
		if err := sp.Decode(r); err != nil {
			return nil, errAt(sp, "spec", err.Error())
		}
		job.Restore = r
		r.ImagesDir.Path = abs(baseDir, r.ImagesDir.Path)
		r.ImagesDir.LatestIn = abs(baseDir, r.ImagesDir.LatestIn)
		r.Options.Root = abs(baseDir, r.Options.Root)
		r.Hooks.Scripts = absAll(baseDir, r.Hooks.Scripts)
		if r.Hooks.PostExit != nil && r.Detached {
			n := keyNode(nodeAt(sp, []string{"hooks"}), "postExit")
			errs = append(errs, errAt(n, "spec.hooks.postExit", "postExit runs when the restored tree exits, which a detached restore does not wait for")...)
		}
	}
	return job, errs
}

func abs(base, p string) string {
	if p == "" || filepath.IsAbs(p) || base == "" {
		return p
	}
	return filepath.Join(base, p)
}

func absAll(base string, ps []string) []string {
	var out []string
	for _, p := range ps {
		out = append(out, abs(base, p))
	}
	return out
}

func resolveCheckpointPaths(c *CheckpointSpec, base string) {
	c.ImagesDir = abs(base, c.ImagesDir)
	c.Target.PidFile = abs(base, c.Target.PidFile)
	c.Options.Root = abs(base, c.Options.Root)
	c.Hooks.Scripts = absAll(base, c.Hooks.Scripts)
	if e := c.Target.Exec; e != nil {
		e.Dir = abs(base, e.Dir)
		e.Stdout = abs(base, e.Stdout)
		e.Stderr = abs(base, e.Stderr)
		e.Ready.File = abs(base, e.Ready.File)
		// A program named by a relative path with a slash (./server) is
		// relative to the spec too; a bare name is looked up in PATH.
		if len(e.Command) > 0 && strings.Contains(e.Command[0], "/") {
			d := e.Dir
			if d == "" {
				d = base
			}
			e.Command[0] = abs(d, e.Command[0])
		}
	}
}

// TemplateData is what {{ ... }} in imagesDir may use.
type TemplateData struct {
	// Time is the UTC start time of the run, sortable as text:
	// 20261126T231455.123456Z.
	Time string
	// Name is metadata.name.
	Name string
}

// TimeFormat is the layout of TemplateData.Time.
const TimeFormat = "20060102T150405.000000Z"

// SnapshotTime formats t for {{ .Time }}.
func SnapshotTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// CheckImagesDirTemplate checks an imagesDir: a template may only use
// .Time and .Name, only in the last path element (so that snapshots of
// one recipe are siblings that retention and latestIn can find).
func CheckImagesDirTemplate(dir string, retention bool) error {
	if !strings.Contains(dir, "{{") {
		if retention {
			return fmt.Errorf("retention needs a per-run name: put {{ .Time }} in the last element of imagesDir")
		}
		return nil
	}
	if strings.Contains(filepath.Dir(dir), "{{") {
		return fmt.Errorf("a template may only be used in the last element of imagesDir")
	}
	if _, err := ExpandImagesDir(dir, TemplateData{Time: "t", Name: "n"}); err != nil {
		return err
	}
	if retention && !strings.Contains(filepath.Base(dir), ".Time") {
		return fmt.Errorf("retention needs a per-run name: put {{ .Time }} in the last element of imagesDir")
	}
	return nil
}

// ExpandImagesDir renders the imagesDir template.
func ExpandImagesDir(dir string, d TemplateData) (string, error) {
	if !strings.Contains(dir, "{{") {
		return dir, nil
	}
	t, err := template.New("imagesDir").Option("missingkey=error").Parse(dir)
	if err != nil {
		return "", fmt.Errorf("parse template: %w (expected {{ .Time }} or {{ .Name }})", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("expand template: %w (expected {{ .Time }} or {{ .Name }})", err)
	}
	out := b.String()
	if strings.ContainsAny(filepath.Base(out), "/") || filepath.Base(out) == "." || filepath.Base(out) == ".." {
		return "", fmt.Errorf("template gives a bad directory name %q", filepath.Base(out))
	}
	return out, nil
}
