package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/engine/netlock"
	"github.com/crtools/crtools/test/harness"
)

// TCP and IPv6 listeners with options, a bound UDP socket: dumped without
// --tcp-established (nothing established), restored on the same ports.
func TestInetListenersAndUDP(t *testing.T) {
	dumpRestoreVerify(t, harness.BuildC(t, "inet.c"))
}

// A connection to a peer outside the tree (the test) and one inside the
// tree: refused without --tcp-established (naming the descriptor, the
// addresses and the option); dumped with -R (the tree runs on, unlocked);
// dumped with it and killed, with action scripts; while the dumped side is
// gone the peer sends, the connection is locked; restore refuses the
// images without --tcp-established and, with it, the stream goes on with
// nothing lost or repeated and the lock is gone.
func TestInetEstablishedConnections(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w := harness.StartWorkload(t, harness.BuildC(t, "inet.c"), fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept the workload's connection: %v", err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	next := 0
	// verify has the workload read the previous ack and send its next
	// seq; the test checks the number and, unless told not to, acks.
	verify := func(ack bool) {
		t.Helper()
		w.MustVerify(15 * time.Second)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := rd.ReadString('\n')
		if err != nil || line != fmt.Sprintf("seq %d\n", next) {
			t.Fatalf("peer read %q (%v), want seq %d", line, err, next)
		}
		if ack {
			if _, err := fmt.Fprintf(conn, "ack %d\n", next); err != nil {
				t.Fatalf("peer write: %v", err)
			}
		}
		next++
	}
	w.MustReady(10 * time.Second)
	verify(true)

	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
	local := conn.RemoteAddr().String()
	if code != 1 || !strings.Contains(out, "--tcp-established") || !strings.Contains(out, fmt.Sprintf("fd 53 of pid %d", w.Pid)) ||
		!strings.Contains(out, local) || !strings.Contains(out, conn.LocalAddr().String()) {
		t.Fatalf("dump without --tcp-established: exit %d\n%s", code, out)
	}
	verify(true)
	lc := netlock.Conn{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(conn.LocalAddr().String())}
	defer netlock.Unlock(lc)

	// -R: the tree runs on, its connections leave repair mode, unlocked.
	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", filepath.Join(t.TempDir(), "running"), "-R", "--tcp-established")
	if code != 0 {
		t.Fatalf("crtools dump -R --tcp-established: exit %d\n%s", code, out)
	}
	if ok, err := netlock.Locked(lc); err != nil || ok {
		t.Fatalf("connection %s still locked after dump -R (%v)", lc, err)
	}
	verify(false)

	// The action scripts see network-lock and network-unlock.
	actions := filepath.Join(t.TempDir(), "actions")
	script := filepath.Join(t.TempDir(), "action.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$CRTOOL_SCRIPT_ACTION\" >> '"+actions+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "images")
	code, out = crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "--tcp-established", "--action-script", script,
		"-v", "2", "-o", filepath.Join(w.Dir, "dump.log"))
	if code != 0 {
		t.Fatalf("crtools dump --tcp-established: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	if ok, err := netlock.Locked(lc); err != nil || !ok {
		t.Fatalf("connection %s is not locked after the dump (%v)", lc, err)
	}
	// The ack of the last seq goes out while the workload is gone.
	if _, err := fmt.Fprintf(conn, "ack %d\n", next-1); err != nil {
		t.Fatalf("peer write while locked: %v", err)
	}
	time.Sleep(300 * time.Millisecond)

	code, out = crtools(t, "restore", "-D", dir, "-d")
	if code != 1 || !strings.Contains(out, "--tcp-established") || !strings.Contains(out, local) {
		t.Fatalf("restore without --tcp-established: exit %d\n%s", code, out)
	}
	code, out = crtools(t, "restore", "-D", dir, "-d", "--tcp-established", "--action-script", script,
		"-v", "2", "-o", filepath.Join(w.Dir, "restore.log"))
	if code != 0 {
		t.Fatalf("crtools restore --tcp-established: exit %d\n%s\n%s", code, out, readLog(w, "restore.log"))
	}
	if ok, err := netlock.Locked(lc); err != nil || ok {
		t.Errorf("connection %s still locked after restore (%v)", lc, err)
	}
	b, _ := os.ReadFile(actions)
	if got, want := strings.Fields(string(b)), []string{"pre-dump", "network-lock", "post-dump", "pre-restore", "network-unlock", "post-restore"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("action scripts ran for %v, want %v", got, want)
	}
	verify(true)
	verify(true)
	if err := w.VerifyAndExit(15 * time.Second); err != nil {
		t.Fatalf("after restore, verify and exit: %v\n%s", err, readLog(w, "restore.log"))
	}
	waitWorkloadExit(t, rp, w)
}
