package ptrace

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// TestTracerThreadEnds: a Tracer never runs on the main thread, and its
// thread is gone once Close returns (shortly after: the runtime ends it
// as the goroutine exits). The kernel detaches a thread's tracees when
// it exits; engine/dump's Finish relies on that to let go of a killed
// tree, and the main thread, which the runtime never ends, would keep
// them.
func TestTracerThreadEnds(t *testing.T) {
	for i := range 100 {
		tr := NewTracer()
		tid := tr.Tid()
		if tid == os.Getpid() {
			t.Fatalf("tracer %d runs on the main thread", i)
		}
		tr.Close()
		task := fmt.Sprintf("/proc/self/task/%d", tid)
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := os.Stat(task); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("tracer thread %d still there 5s after Close", tid)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
