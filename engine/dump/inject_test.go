package dump

import (
	"strings"
	"testing"
)

// TestInjectAllNoThread: a job whose task has no stopped thread fails with
// an error naming the task, and the others carry on (injectAll took
// threads[0] for the leader and sliced threadQs[1:], which panicked on
// such a task; freeze does not produce one today).
func TestInjectAllNoThread(t *testing.T) {
	j := &injectJob{t: &task{pid: 4194301}}
	injectAll([]*injectJob{j}, false)
	if j.err == nil || !strings.Contains(j.err.Error(), "pid 4194301: no stopped thread") {
		t.Errorf("injectAll of a task without threads: err %v", j.err)
	}
	if j.res != nil {
		t.Errorf("injectAll of a task without threads: results %+v", j.res)
	}
}
