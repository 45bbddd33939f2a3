package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// pipelineStatus is what the consumer of testdata/pipestage.c last wrote.
type pipelineStatus struct{ count, badGot, badWant, ticks uint64 }

func readPipelineStatus(t *testing.T, path string) pipelineStatus {
	t.Helper()
	b, _ := os.ReadFile(path)
	var s pipelineStatus
	fmt.Sscanf(string(b), "count %d bad %d %d ticks %d", &s.count, &s.badGot, &s.badWant, &s.ticks)
	return s
}

// waitPipeline waits (bounded) until the consumer's count passes min and
// its timer ticked past minTicks, and fails on any stream error.
func waitPipeline(t *testing.T, path string, min, minTicks uint64) pipelineStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := readPipelineStatus(t, path)
		if s.badWant != 0 {
			t.Fatalf("consumer got %d where %d was due: the stream lost, repeated or reordered numbers", s.badGot, s.badWant)
		}
		if s.count > min && s.ticks > minTicks {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline stalled: %+v, want count > %d and ticks > %d", s, min, minTicks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShellPipelineMidStream: a real shell pipeline
//
//	sh -c 'pipestage producer | pipestage filter | pipestage consumer STATUS'
//
// is checkpointed mid-stream (both pipes full, 16 messages in the filter's
// seqpacket pair, the consumer in epoll_wait on its pipe and a timerfd,
// its status file open) and killed, then restored: the same four
// processes go on, the consumer still sees every number exactly once and
// in order (it checks each against the next one due), its count goes on
// from where it was and its timer keeps firing. The images carry the data
// in flight in the pipes and in the socket pair.
func TestShellPipelineMidStream(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	bin := buildTestdata(t, "pipestage.c")
	work := t.TempDir()
	status := filepath.Join(work, "status")
	out, err := os.Create(filepath.Join(work, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("%s producer | %s filter | %s consumer %s", bin, bin, bin, status))
	cmd.Stdout, cmd.Stderr, cmd.Dir = out, out, work
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sh := cmd.Process.Pid
	t.Cleanup(func() {
		for _, p := range harness.KillTree(sh) {
			rp.WaitPid(p, 5*time.Second)
		}
	})
	before := waitPipeline(t, status, 20000, 5)
	var stages []int
	for _, c := range strings.Fields(readFileString(fmt.Sprintf("/proc/%d/task/%d/children", sh, sh))) {
		p, _ := strconv.Atoi(c)
		stages = append(stages, p)
	}
	if len(stages) != 3 {
		t.Fatalf("sh %d has children %v, want the three stages", sh, stages)
	}

	dir := filepath.Join(work, "images")
	if code, o := crtools(t, "dump", "-t", fmt.Sprint(sh), "-D", dir, "-v", "2", "-o", filepath.Join(work, "dump.log")); code != 0 {
		t.Fatalf("crtools dump: exit %d\n%s\n%s", code, o, readFileString(filepath.Join(work, "dump.log")))
	}
	atDump := readPipelineStatus(t, status)
	for _, p := range append([]int{sh}, stages...) {
		if _, err := rp.WaitPid(p, 10*time.Second); err != nil {
			t.Fatalf("dumped task %d did not die: %v", p, err)
		}
		rp.Forget(p)
	}
	for _, img := range []string{"pipes-data.img", "sk-queues.img"} {
		if fi, err := os.Stat(filepath.Join(dir, img)); err != nil || fi.Size() < 16*8 {
			t.Errorf("%s: %v (size %d): nothing in flight was saved", img, err, sizeOf(fi))
		}
	}
	if code, o := crtools(t, "restore", "-D", dir, "-d", "-v", "2", "-o", filepath.Join(work, "restore.log")); code != 0 {
		t.Fatalf("crtools restore: exit %d\n%s\n%s", code, o, readFileString(filepath.Join(work, "restore.log")))
	}
	for _, p := range stages {
		if st, err := procStat(p); err != nil || st.ppid != sh {
			t.Errorf("restored stage %d: parent %d (%v), want sh %d", p, st.ppid, err, sh)
		}
	}
	after := waitPipeline(t, status, atDump.count+20000, atDump.ticks+10)
	if after.count < before.count {
		t.Errorf("count went back: %d before the dump, %d after restore", before.count, after.count)
	}
	// The restored timer fires at its 20 ms interval: about 100
	// expirations in 2 s (a timerfd counts every expiration, so a
	// consumer slowed by a busy machine only reports them late).
	s1, t1 := readPipelineStatus(t, status), time.Now()
	time.Sleep(2 * time.Second)
	s2, t2 := readPipelineStatus(t, status), time.Now()
	if want := float64(t2.Sub(t1)) / float64(20*time.Millisecond); float64(s2.ticks-s1.ticks) < 0.7*want || float64(s2.ticks-s1.ticks) > 1.3*want {
		t.Errorf("restored timer: %d expirations in %v, want about %.0f (20 ms interval)", s2.ticks-s1.ticks, t2.Sub(t1), want)
	}
	if s2.badWant != 0 || s2.count <= after.count {
		t.Errorf("stream after restore: %+v (was %+v)", s2, after)
	}
	t.Logf("consumer: %d numbers before the dump, %d at it, %d after restore; timer ticks %d -> %d", before.count, atDump.count, after.count, atDump.ticks, after.ticks)
	if o := readFileString(filepath.Join(work, "out")); o != "" {
		t.Errorf("pipeline wrote to its output: %q", o)
	}
}

func readFileString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
