package executor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Step statuses in a journal.
const (
	StatusDone       = "done"        // ran and stays done
	StatusFailed     = "failed"      // this step failed
	StatusNotRun     = "not-run"     // never started
	StatusUndone     = "undone"      // ran, then its undo ran
	StatusNoUndo     = "no-undo"     // ran, changed nothing that needed undoing
	StatusUndoFailed = "undo-failed" // ran, and its undo failed: left to fix
	StatusKept       = "kept"        // ran; a later failure did not undo it (point of no return)
	StatusWarning    = "warning"     // optional step failed; the job went on
)

// Journal is what really happened during one run of a plan.
type Journal struct {
	Job       string        `json:"job"`
	Kind      string        `json:"kind"`
	Source    string        `json:"source,omitempty"`
	Started   time.Time     `json:"started"`
	Finished  time.Time     `json:"finished"`
	Result    string        `json:"result"` // done, rolled-back, rollback-incomplete, locked
	Error     string        `json:"error,omitempty"`
	ImagesDir string        `json:"imagesDir,omitempty"`
	RootPid   int           `json:"rootPid,omitempty"`
	Steps     []*StepRecord `json:"steps"`
	// ExitStatus is the restored root's status when the restore waited.
	ExitStatus *int `json:"exitStatus,omitempty"`
	// Left lists what a failed undo left behind, for a human to fix.
	Left []string `json:"left,omitempty"`
	// Pruned lists snapshots removed by retention.
	Pruned []string `json:"pruned,omitempty"`
}

// Results of a run.
const (
	ResultDone       = "done"
	ResultRolledBack = "rolled-back"
	// ResultFailed: a step failed after a point of no return; what came
	// after it was rolled back, what came before is kept.
	ResultFailed             = "failed"
	ResultRollbackIncomplete = "rollback-incomplete"
	ResultLocked             = "locked"
)

// StepRecord is one step in the journal.
type StepRecord struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Status      string        `json:"status"`
	Error       string        `json:"error,omitempty"`
	Undo        string        `json:"undo,omitempty"`
	UndoError   string        `json:"undoError,omitempty"`
	Duration    time.Duration `json:"durationNs"`
}

// ExitCode maps the result to crtools' exit codes: 0 done, 1 failed and
// rolled back, 3 rollback incomplete, 4 locked.
func (j *Journal) ExitCode() int {
	switch j.Result {
	case ResultDone:
		return 0
	case ResultRolledBack, ResultFailed:
		return 1
	case ResultRollbackIncomplete:
		return 3
	case ResultLocked:
		return 4
	}
	return 1
}

// Failed reports whether the job did not complete.
func (j *Journal) Failed() bool { return j.Result != ResultDone }

// WriteText prints the journal for people.
func (j *Journal) WriteText(w io.Writer) {
	fmt.Fprintf(w, "Journal of %s %q: %s\n", j.Kind, j.Job, j.Result)
	if j.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", j.Error)
	}
	for i, s := range j.Steps {
		line := fmt.Sprintf("  %2d. %-17s %-12s", i+1, s.Name, s.Status)
		if s.Error != "" {
			line += " " + s.Error
		}
		if s.UndoError != "" {
			line += " undo failed: " + s.UndoError
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	for _, l := range j.Left {
		fmt.Fprintf(w, "  left to fix: %s\n", l)
	}
}

// WriteJSON writes the journal as indented JSON.
func (j *Journal) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}
