package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// CompleteMarker is written into an images directory just before it is
// renamed into place. Only directories that have it count as snapshots
// for `latestIn` and retention, so a directory left by a crash (or made
// by a person) is never picked or pruned.
const CompleteMarker = ".crtools-complete"

// Marker is the content of CompleteMarker.
type Marker struct {
	Job       string    `json:"job"`
	Completed time.Time `json:"completed"`
	RootPid   int       `json:"rootPid,omitempty"`
}

// Snapshot is a complete images directory.
type Snapshot struct {
	Dir    string
	Marker Marker
}

// Snapshots lists the complete snapshots in dir, oldest first.
func Snapshots(dir string) ([]Snapshot, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", dir, err)
	}
	var out []Snapshot
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue // temporary and hidden directories are never snapshots
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(filepath.Join(p, CompleteMarker))
		if err != nil {
			continue
		}
		var m Marker
		if err := json.Unmarshal(b, &m); err != nil || m.Completed.IsZero() {
			continue
		}
		out = append(out, Snapshot{Dir: p, Marker: m})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Marker.Completed.Equal(out[j].Marker.Completed) {
			return out[i].Marker.Completed.Before(out[j].Marker.Completed)
		}
		return out[i].Dir < out[j].Dir
	})
	return out, nil
}

// ErrNoSnapshot: a directory holds no complete snapshot.
var ErrNoSnapshot = errors.New("no complete snapshot")

// LatestSnapshot returns the newest complete snapshot in dir.
func LatestSnapshot(dir string) (string, error) {
	s, err := Snapshots(dir)
	if err != nil {
		return "", err
	}
	if len(s) == 0 {
		return "", fmt.Errorf("%w in %s (a snapshot is a directory with a %s file)", ErrNoSnapshot, dir, CompleteMarker)
	}
	return s[len(s)-1].Dir, nil
}

// Prune removes old snapshots of job in dir and returns what it removed.
// It keeps the newest keepLast (0: no count rule), those completed within
// keepWithin of now (0: no age rule), always the newest one, and any
// snapshot a kept one depends on (its "parent" link, CRIU's convention
// for incremental images). Other recipes' snapshots are not touched.
//
// crtools itself writes no incremental snapshots yet (no pre-dump, and
// restore refuses pages that live in a parent), so its own snapshots
// never depend on each other; the parent rule protects image sets made
// by other tools, or by a later crtools, in the same directory.
func Prune(dir, job string, keepLast int, keepWithin time.Duration, now time.Time) ([]string, error) {
	all, err := Snapshots(dir)
	if err != nil {
		return nil, err
	}
	var mine []Snapshot
	for _, s := range all {
		if s.Marker.Job == job {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return nil, nil
	}
	keep := make([]bool, len(mine))
	keep[len(mine)-1] = true
	for i := range mine {
		if keepLast > 0 && i >= len(mine)-keepLast {
			keep[i] = true
		}
		if keepWithin > 0 && now.Sub(mine[i].Marker.Completed) <= keepWithin {
			keep[i] = true
		}
	}
	// Keep what kept snapshots depend on, transitively.
	byPath := map[string]int{}
	for i, s := range mine {
		byPath[s.Dir] = i
	}
	for changed := true; changed; {
		changed = false
		for i, s := range mine {
			if !keep[i] {
				continue
			}
			target, err := os.Readlink(filepath.Join(s.Dir, "parent"))
			if err != nil {
				continue
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(s.Dir, target)
			}
			if j, ok := byPath[filepath.Clean(target)]; ok && !keep[j] {
				keep[j] = true
				changed = true
			}
		}
	}
	var removed []string
	var errs []error
	for i, s := range mine {
		if keep[i] {
			continue
		}
		// Remove the marker first: a half-removed directory must not
		// look like a snapshot.
		if err := os.Remove(filepath.Join(s.Dir, CompleteMarker)); err != nil {
			errs = append(errs, fmt.Errorf("unmark %s: %w", s.Dir, err))
			continue
		}
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.Dir, err))
			continue
		}
		removed = append(removed, s.Dir)
	}
	return removed, errors.Join(errs...)
}

// writeMarker writes the completion marker into dir. It does not fsync
// it: its only caller, commit, makes the whole dir durable next
// (image.SyncDir, a syncfs), which covers the marker too.
func writeMarker(dir string, m Marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, CompleteMarker), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write completion marker: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write completion marker: %w", err)
	}
	return f.Close()
}

func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", p, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}
