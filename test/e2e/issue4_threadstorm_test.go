package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
	"github.com/crtools/crtools/test/harness"
)

// threadStormSrc keeps 8 short-lived threads going: each runs a few
// milliseconds and exits, and the main thread starts a new one for each
// that ended, so threads appear and vanish while crtools seizes them.
// Verify checks that threads kept being created and joined and that none
// saw its own TLS value change.
const threadStormSrc = `#include "crt.h"
#include <pthread.h>

#define WIDTH 8
static __thread uint64_t mine;
static volatile uint64_t created, joined, bad;

static void *run(void *arg)
{
	uint64_t id = (uint64_t)(uintptr_t)arg;
	int64_t end = crt_now() + (1 + id % 4) * 1000000LL;

	mine = id;
	while (crt_now() < end)
		crt_sleep_ms(1);
	if (mine != id)
		__atomic_add_fetch(&bad, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

int main(void)
{
	pthread_t th[WIDTH];
	uint64_t last_created = 0, last_joined = 0;
	sigset_t set;

	crt_init();
	/* Only the main thread answers verify requests. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (int i = 0; i < WIDTH; i++)
		if (pthread_create(&th[i], NULL, run, (void *)(uintptr_t)++created))
			crt_die("pthread_create");
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	crt_ready();
	for (uint64_t round = 0;; round++) {
		int i = round % WIDTH;

		pthread_join(th[i], NULL);
		joined++;
		pthread_sigmask(SIG_BLOCK, &set, NULL);
		if (pthread_create(&th[i], NULL, run, (void *)(uintptr_t)++created))
			crt_die("pthread_create");
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		crt_tick();
		if (crt_pending()) {
			CRT_CHECK(!bad, "%" PRIu64 " threads saw their TLS change", bad);
			CRT_CHECK(!crt_progress || (created > last_created && joined > last_joined),
				  "threads stalled at %" PRIu64 " created, %" PRIu64 " joined", created, joined);
			last_created = created;
			last_joined = joined;
			crt_report();
		}
	}
}
`

// TestIssue4ThreadStorm: freezing must catch threads created while
// seizing. A process whose threads come and go all the time is dumped
// with -s several times: each dump that succeeds holds exactly the
// threads left stopped in /proc (no thread missed), one that fails exits
// 1 with no images and leaves the process running untraced. The last
// good images are restored and the process carries on.
func TestIssue4ThreadStorm(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	src := filepath.Join(t.TempDir(), "threadstorm.c")
	if err := os.WriteFile(src, []byte(threadStormSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	w := harness.StartWorkload(t, harness.BuildC(t, src, "-I"+harness.WorkloadsDir(t)))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	good := ""
	lastOK := false // whether the last round's dump -s succeeded
	// At least rounds rounds, and more (up to maxRounds) while the last
	// one failed: the process ran on after a failed round, so images of
	// an earlier round would take it back behind the progress its last
	// verify saw, and the restore's verify would rightly complain.
	const rounds, maxRounds = 6, 12
	for i := 0; i < rounds || (!lastOK && i < maxRounds); i++ {
		dir := filepath.Join(t.TempDir(), "images")
		code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "-s")
		if code != 0 {
			checkFailedDumpRound(t, w, i, code, dir, lastLines(out, 1))
			lastOK = false
			continue
		}
		live := waitTreeStopped(t, w.Pid)
		var want []int
		for tid, s := range live[w.Pid] {
			want = append(want, tid)
			if s.state != "T" {
				t.Errorf("round %d: thread %d in state %s after dump -s, want stopped", i, tid, s.state)
			}
		}
		sort.Ints(want)
		ents, err := image.ReadFile(dir, image.Pstree, 0)
		if err != nil || len(ents) != 1 {
			t.Fatalf("round %d: pstree image: %d entries, %v", i, len(ents), err)
		}
		var got []int
		for _, tid := range ents[0].Msg.(*pb.PstreeEntry).GetThreads() {
			got = append(got, int(tid))
			if !image.Exists(dir, image.Core, uint64(tid)) {
				t.Errorf("round %d: no core image of thread %d", i, tid)
			}
		}
		sort.Ints(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("round %d: images hold threads %v, the stopped process has %v", i, got, want)
		}
		good = dir
		lastOK = true
		if i >= rounds-1 {
			break
		}
		if err := unix.Kill(w.Pid, unix.SIGCONT); err != nil {
			t.Fatal(err)
		}
		w.MustVerify(10 * time.Second)
	}
	if !lastOK {
		t.Fatalf("the last dump of the thread storm failed, after %d rounds (last good images: %q)", maxRounds, good)
	}
	if t.Failed() {
		return
	}
	// The last round was good: it left the process stopped.
	if st, _ := procStat(w.Pid); st.state != "T" {
		t.Fatalf("after the last dump -s pid %d is in state %s", w.Pid, st.state)
	}
	killOriginal(t, w)
	rp.Forget(w.Pid)
	restoreDetached(t, w, good)
	verifyRestored(t, w)
	waitExit(t, rp, w.Pid, 0)
}
