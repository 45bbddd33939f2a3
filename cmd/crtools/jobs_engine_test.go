package main

// Job specs that use engine features beyond plain dump and restore: a
// page server and the network lock with its hooks, applied for real.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crtools/crtools/executor"
	"github.com/crtools/crtools/test/harness"
)

// counterCmd is a YAML flow list running a perl counter that prints
// "started PID" then n=1, n=2, ... every 50 ms.
const counterCmd = `[perl, -e, '$| = 1; print "started $$\n"; my $n = 0; while (1) { $n++; print "n=$n\n"; select(undef, undef, undef, 0.05); }']`

// TestApplyPageServer: a Checkpoint spec with pageServer sends the memory
// pages to `crtools page-server` and keeps the other images locally;
// together they restore the program, which carries on.
func TestApplyPageServer(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	srvDir := filepath.Join(d, "server")
	addr, done := startPageServer(t, "-D", srvDir, "--address", "127.0.0.1")
	host, port, _ := net.SplitHostPort(addr)
	job := filepath.Join(d, "job.yaml")
	os.WriteFile(job, []byte(fmt.Sprintf(`apiVersion: crtools/v1
kind: Checkpoint
metadata: {name: ps}
spec:
  target:
    exec:
      command: %s
      stdout: w.out
      ready: {delay: 300ms}
  imagesDir: images
  pageServer: {address: "%s", port: %s}
`, counterCmd, host, port)), 0o644)
	env := []string{lockDirEnv + "=" + t.TempDir()}
	r := crtoolsRun(t, env, "apply", job)
	if r.code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	pid := r.journals[0].RootPid
	if code, stderr := waitExit(t, done); code != "0" {
		t.Fatalf("page-server exit %s: %s", code, stderr)
	}
	var srvPages, localPages int
	for _, n := range harness.DirNames(t, srvDir) {
		if strings.HasPrefix(n, "pages-") {
			srvPages++
		}
	}
	local := filepath.Join(d, "images")
	for _, n := range harness.DirNames(t, local) {
		if strings.HasPrefix(n, "pages-") || strings.HasPrefix(n, "pagemap-") {
			localPages++
		}
	}
	if srvPages == 0 || localPages != 0 {
		t.Fatalf("pages files: %d on the server, %d local (want some, none)", srvPages, localPages)
	}
	if _, err := os.Stat(filepath.Join(local, executor.CompleteMarker)); err != nil {
		t.Fatalf("local images not complete: %v", err)
	}
	// Put the two halves together and restore.
	for _, n := range harness.DirNames(t, local) {
		b, _ := os.ReadFile(filepath.Join(local, n))
		os.WriteFile(filepath.Join(srvDir, n), b, 0o600)
	}
	before, _ := os.ReadFile(filepath.Join(d, "w.out"))
	rs := filepath.Join(d, "rs.yaml")
	os.WriteFile(rs, []byte("apiVersion: crtools/v1\nkind: Restore\nmetadata: {name: ps-restore}\nspec: {imagesDir: server, detached: true}\n"), 0o644)
	r = crtoolsRun(t, env, "apply", rs)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s", r.code, r.stderr)
	}
	defer jobKillReap(pid)
	if r.journals[0].RootPid != pid {
		t.Errorf("restored as %d, want %d", r.journals[0].RootPid, pid)
	}
	countsInOrder(t, waitGrows(t, filepath.Join(d, "w.out"), lines(string(before))+3))
}

// TestApplyNetworkLockHooks: a Checkpoint spec with tcpEstablished and
// network-lock hooks, on a program streaming over an established TCP
// connection to the test: the hooks run in order (network-lock once the
// tree is frozen, network-unlock once it runs on), and the stream carries
// on with every number once and in order, both after a good checkpoint
// (leaveRunning) and after checkpoints that failed at each step from the
// network lock on and rolled back.
func TestApplyNetworkLockHooks(t *testing.T) {
	crtoolsBin(t)
	d := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	prog := exec.Command("perl", "-MIO::Socket::INET", "-e", fmt.Sprintf(`$| = 1; my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:%d") or die "connect: $!"; $s->autoflush(1); my $n = 0; while (1) { $n++; print $s "n=$n\n" or die "write: $!"; select(undef, undef, undef, 0.02); }`, port))
	prog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { prog.Process.Kill(); prog.Wait() }()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("the program did not connect: %v", err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	next := 0
	// readOn reads k more lines and checks they continue the count.
	readOn := func(t *testing.T, k int) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := 0; i < k; i++ {
			l, err := rd.ReadString('\n')
			if err != nil {
				st := jobProcState(prog.Process.Pid)
				if st == "Z" {
					ps, _ := prog.Process.Wait()
					t.Fatalf("connection after n=%d: %v; the program died: %v", next, err, ps)
				}
				t.Fatalf("connection after n=%d: %v (program state %q)", next, err, st)
			}
			next++
			if l != fmt.Sprintf("n=%d\n", next) {
				t.Fatalf("got %q, want n=%d", l, next)
			}
		}
	}
	readOn(t, 5)

	hooksLog := filepath.Join(d, "hooks.log")
	hook := fmt.Sprintf(`[sh, -c, 'echo "$CRTOOLS_SCRIPT_ACTION" >> %s']`, hooksLog)
	job := filepath.Join(d, "job.yaml")
	writeLiveJob(t, job, "netlock", prog.Process.Pid, fmt.Sprintf(`  options: {tcpEstablished: true}
  hooks:
    preDump: %s
    networkLock: %s
    networkUnlock: %s
    postDump: %s
`, hook, hook, hook, hook))
	env := []string{lockDirEnv + "=" + t.TempDir()}
	r := crtoolsRun(t, env, "apply", job)
	if r.code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	readOn(t, 20)
	if b, _ := os.ReadFile(hooksLog); string(b) != "pre-dump\nnetwork-lock\nnetwork-unlock\npost-dump\n" {
		t.Errorf("hooks ran:\n%s", b)
	}
	if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 1 {
		t.Errorf("snapshots: %v", ents)
	}

	// Failures once the network is locked: the rollback unlocks it.
	locked := false
	for _, step := range stepNames(t, job) {
		if step == "hook-network-lock" {
			locked = true
		}
		if !locked || step == "unlock" || step == "hook-post-dump" {
			continue
		}
		t.Run(step, func(t *testing.T) {
			r := crtoolsRun(t, append(env, executor.FaultEnv+"="+step+executor.FaultAfter), "apply", job)
			if r.code != 1 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			readOn(t, 20)
			if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 1 {
				t.Errorf("snapshots: %v", ents)
			}
		})
	}
}

// TestApplyInterrupted: SIGINT or SIGTERM while apply runs (here in a slow
// post-dump hook) cancels the job and rolls it back: exit 1, the journal
// says so, the workload runs on with its state, no snapshot, the
// pre-dump hook undone; the lock is free for the next run.
func TestApplyInterrupted(t *testing.T) {
	bin := crtoolsBin(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			d := t.TempDir()
			out := filepath.Join(d, "w.out")
			w := startCounter(t, out)
			flag, slow := filepath.Join(d, "pre-dump-flag"), filepath.Join(d, "post-dump-started")
			job := filepath.Join(d, "job.yaml")
			writeLiveJob(t, job, "interrupted", w.Process.Pid, fmt.Sprintf(`  hooks:
    preDump: {run: [touch, %s], undo: [rm, %s]}
    postDump: [sh, -c, 'touch %s; sleep 30']
`, flag, flag, slow))
			lockDir := t.TempDir()
			cmd := exec.Command(bin, "apply", job)
			cmd.Env = append(os.Environ(), lockDirEnv+"="+lockDir)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 1000; i++ {
				if _, err := os.Stat(slow); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			before, _ := os.ReadFile(out)
			start := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("apply: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("apply took %s to stop", el)
			}
			if !strings.Contains(stdout.String(), `Journal of Checkpoint "interrupted": rolled-back`) {
				t.Errorf("journal:\n%s", stdout.String())
			}
			if ents, _ := os.ReadDir(filepath.Join(d, "snaps")); len(ents) != 0 {
				t.Errorf("images left: %v", ents)
			}
			if _, err := os.Stat(flag); err == nil {
				t.Errorf("pre-dump side effect left")
			}
			countsInOrder(t, waitGrows(t, out, lines(string(before))+3))
			if tp := tracerPid(w.Process.Pid); tp != 0 {
				t.Errorf("workload traced by %d", tp)
			}
			// The lock is free: the same recipe runs to the end.
			job2, _ := os.ReadFile(job)
			os.WriteFile(job, []byte(strings.Replace(string(job2), "sleep 30", "true", 1)), 0o644)
			if r := crtoolsRun(t, []string{lockDirEnv + "=" + lockDir}, "apply", job); r.code != 0 {
				t.Errorf("next run: exit %d: %s", r.code, r.stderr)
			}
		})
	}
}

// TestApplyCrash: crtools killed (SIGKILL, no rollback possible) while it
// writes a snapshot leaves nothing that looks like a snapshot: only a
// hidden temporary directory, which latestIn and retention ignore; the
// workload is not left frozen and is not killed (no SIGTRAP left
// pending by an injection); the lock died with the process, so the
// next run works and becomes the newest snapshot.
func TestApplyCrash(t *testing.T) {
	bin := crtoolsBin(t)
	d := t.TempDir()
	ready := filepath.Join(d, "ready")
	out := filepath.Join(d, "w.out")
	prog := startPerlTo(t, out, "-e", `$| = 1; my $x = "a" x (64 << 20); open(my $r, ">", $ARGV[0]) or die; close $r; my $n = 0; while (1) { $n++; print "n=$n\n"; select(undef, undef, undef, 0.05); }`, ready)
	defer func() { prog.Process.Kill(); prog.Wait() }()
	for i := 0; i < 1000; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	snaps := filepath.Join(d, "snaps")
	job := filepath.Join(d, "job.yaml")
	writeLiveJob(t, job, "crash", prog.Process.Pid, `  retention: {keepLast: 1}
`)
	lockDir := t.TempDir()
	cmd := exec.Command(bin, "apply", job)
	cmd.Env = append(os.Environ(), lockDirEnv+"="+lockDir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it as soon as the pages file grows in the temporary directory.
	var tmp string
	for i := 0; i < 2000 && tmp == ""; i++ {
		ents, _ := os.ReadDir(snaps)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				if st, err := os.Stat(filepath.Join(snaps, e.Name(), "pages-1.img")); err == nil && st.Size() > 0 {
					tmp = e.Name()
				}
			}
		}
		if tmp == "" {
			time.Sleep(2 * time.Millisecond)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if tmp == "" {
		t.Fatal("never saw the temporary directory being written")
	}
	ents, _ := os.ReadDir(snaps)
	if len(ents) != 1 || ents[0].Name() != tmp {
		t.Fatalf("after the crash %s holds %v, want only the temporary %s", snaps, ents, tmp)
	}
	if _, err := executor.LatestSnapshot(snaps); err == nil {
		t.Errorf("latestIn found a snapshot after the crash")
	}
	// The workload goes on (the kernel detached it when its tracer died).
	before, _ := os.ReadFile(out)
	waitJobState(t, prog.Process.Pid, "workload after crtools was killed", "S", "R")
	if jobProcState(prog.Process.Pid) == "Z" {
		ps, _ := prog.Process.Wait()
		t.Fatalf("the workload died when crtools was killed: %v", ps)
	}
	countsInOrder(t, "started (the output file has no start line)\n"+waitGrows(t, out, lines(string(before))+3))
	r := crtoolsRun(t, []string{lockDirEnv + "=" + lockDir}, "apply", job)
	if r.code != 0 {
		t.Fatalf("run after the crash: exit %d: %s", r.code, r.stderr)
	}
	if l, err := executor.LatestSnapshot(snaps); err != nil || l != r.journals[0].ImagesDir {
		t.Errorf("latest %s %v, want %s", l, err, r.journals[0].ImagesDir)
	}
	// The next run of the recipe holds its lock, so it knows the crashed
	// run's temporary directory is debris and removes it.
	if _, err := os.Stat(filepath.Join(snaps, tmp)); !os.IsNotExist(err) {
		t.Errorf("the crashed run's temporary directory %s is still there (%v)", tmp, err)
	}
}

// startPerlTo starts perl with args as our child, in its own session, its
// stdout in a new file out; the caller kills and waits for it.
func startPerlTo(t *testing.T, out string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prog := exec.Command("perl", args...)
	prog.Stdout = f
	prog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	return prog
}

// TestDumpCrashKeepsStoppedTask: crtools SIGKILLed while it writes pages,
// after it injected its getters into every task, leaves a task that was
// stopped by job control stopped and alive, and its running parent
// running; SIGCONT wakes the stopped task, which then keeps running. It is
// killed once at the first pages file that grows and once when both tasks'
// have.
//
// Every task's injections end settled in a PTRACE_EVENT_STOP
// (ptrace.Injector SettleAtEnd), the stopped task's too: its last
// injected call is single-stepped, and a tracer that dies (unlike
// PTRACE_DETACH) leaves the step flag set, so the task died of SIGTRAP at
// the first instruction it ran after SIGCONT. Before the settle covered
// stopped tasks, the look right after SIGCONT caught that in 1 run of
// 8-15 only: the task went back into its select (state S) and died when
// the select returned, up to 50 ms later. With the second look, 300 ms
// after SIGCONT, both kill points failed every run (30 of 30).
func TestDumpCrashKeepsStoppedTask(t *testing.T) {
	bin := crtoolsBin(t)
	for _, kill := range []struct {
		name  string
		grown int // pages files grown when crtools is killed
	}{{"first-pages-file", 1}, {"both-pages-files", 2}} {
		t.Run(kill.name, func(t *testing.T) { dumpCrashKeepsStopped(t, bin, kill.grown) })
	}
}

func dumpCrashKeepsStopped(t *testing.T, bin string, grownAtKill int) {
	d := t.TempDir()
	ready := filepath.Join(d, "ready")
	out := filepath.Join(d, "w.out")
	prog := startPerlTo(t, out, "-e", `$| = 1;
my $kid = fork() // die; if ($kid == 0) { while (1) { select(undef, undef, undef, 0.05) } }
kill 'STOP', $kid;
my $x = "a" x (128 << 20);
open(my $r, ">", $ARGV[0]) or die; print $r $kid; close $r;
my $n = 0; while (1) { $n++; print "n=$n\n"; select(undef, undef, undef, 0.05); }`, ready)
	kid := 0
	defer func() {
		if kid > 0 {
			syscall.Kill(kid, syscall.SIGKILL)
		}
		prog.Process.Kill()
		prog.Wait()
	}()
	for i := 0; i < 1000 && kid == 0; i++ {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			kid, _ = strconv.Atoi(string(b))
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if kid == 0 {
		t.Fatal("workload never became ready")
	}
	if st := jobProcState(kid); st != "T" {
		t.Fatalf("child %d in state %q before the dump, want T", kid, st)
	}
	snaps := filepath.Join(d, "snaps")
	os.Mkdir(snaps, 0o755)
	cmd := exec.Command(bin, "dump", "-t", strconv.Itoa(prog.Process.Pid), "-D", filepath.Join(snaps, "img"), "-R")
	cmd.Env = append(os.Environ(), lockDirEnv+"="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once grownAtKill pages files have grown in the temporary
	// directory: by then every task has had its getters injected.
	seen := false
	for i := 0; i < 5000 && !seen; i++ {
		ents, _ := os.ReadDir(snaps)
		for _, e := range ents {
			if !strings.Contains(e.Name(), ".tmp-") {
				continue
			}
			pages, _ := filepath.Glob(filepath.Join(snaps, e.Name(), "pages-*.img"))
			grown := 0
			for _, p := range pages {
				if st, err := os.Stat(p); err == nil && st.Size() > 0 {
					grown++
				}
			}
			seen = grown >= grownAtKill
		}
		if !seen {
			time.Sleep(time.Millisecond)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !seen {
		t.Fatal("never saw the pages being written")
	}
	// The parent goes on, the child stays stopped: both alive.
	before, _ := os.ReadFile(out)
	waitJobState(t, prog.Process.Pid, "parent after crtools was killed", "S", "R")
	waitGrows(t, out, lines(string(before))+3)
	waitJobState(t, kid, "stopped child after crtools was killed", "T")
	// Stopped for real: still stopped a while later, and SIGCONT wakes it.
	time.Sleep(200 * time.Millisecond)
	if st := jobProcState(kid); st != "T" {
		t.Fatalf("child %d in state %q 200 ms later, want T", kid, st)
	}
	syscall.Kill(kid, syscall.SIGCONT)
	waitJobState(t, kid, "child after SIGCONT", "S", "R")
	// And it lives on: its select returns every 50 ms, and a step flag
	// left set would have killed it at the first instruction after one.
	time.Sleep(300 * time.Millisecond)
	if st := jobProcState(kid); st != "S" && st != "R" {
		t.Fatalf("child %d in state %q 300 ms after SIGCONT, want S or R (Z: it died)", kid, st)
	}
}

// waitJobState waits up to 5 s for pid to be in one of the states want
// (letters of /proc/PID/stat), and fails the test naming what otherwise.
func waitJobState(t *testing.T, pid int, what string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for st := jobProcState(pid); !slices.Contains(want, st); st = jobProcState(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: pid %d in state %q, want one of %v", what, pid, st, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
