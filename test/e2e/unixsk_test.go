package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crtools/crtools/test/harness"
)

// TestDumpRestoreUnixSockets: a seqpacket pair with queued messages (one
// empty), a listener on an abstract name with a connection not accepted
// yet, a datagram socket on an abstract name with queued datagrams, and a
// stream pair with SO_PASSCRED and changed buffer sizes
// (testdata/unixsk.c checks boundaries, names, options and credentials).
func TestDumpRestoreUnixSockets(t *testing.T) {
	dumpRestoreVerify(t, buildTestdata(t, "unixsk.c"))
}

// TestDumpUnixPendingDataRefused: bytes a client wrote into a connection
// not accepted yet cannot be read without accepting it (which cannot be
// undone): the dump is refused with a message naming the listener and the
// amount, and the task runs on.
func TestDumpUnixPendingDataRefused(t *testing.T) {
	harness.RequireRoot(t)
	harness.Subreaper()
	w := harness.StartWorkload(t, buildTestdata(t, "unixsk.c"), "pending-data")
	w.MustReady(10 * time.Second)
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir)
	if code != 1 || !strings.Contains(out, "bytes written into a connection to") || !strings.Contains(out, fmt.Sprintf("crtools-e2e-unixsk-%d-listen", w.Pid)) ||
		!strings.Contains(out, "not accepted yet") {
		t.Fatalf("dump with data in a connection not accepted: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("refused dump left %s behind (%v)", dir, err)
	}
	w.MustVerify(10 * time.Second)
}

// TestDumpRestoreEvasiveDevices: a device opened through a node that was
// removed is refused without --evasive-devices (naming the node and the
// option); with it, it is reopened through another path to the same
// device (testdata/evasive.c).
func TestDumpRestoreEvasiveDevices(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	w := harness.StartWorkload(t, buildTestdata(t, "evasive.c"))
	w.MustReady(10 * time.Second)
	w.MustVerify(10 * time.Second)
	refused := filepath.Join(t.TempDir(), "refused")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", refused)
	if code != 1 || !strings.Contains(out, "--evasive-devices") || !strings.Contains(out, filepath.Join(w.Dir, "zero.dev")) {
		t.Fatalf("dump without --evasive-devices: exit %d\n%s", code, out)
	}
	w.MustVerify(10 * time.Second)
	dir := filepath.Join(t.TempDir(), "images")
	if code, out := crtools(t, "dump", "-t", fmt.Sprint(w.Pid), "-D", dir, "--evasive-devices", "-v", "2", "-o", filepath.Join(w.Dir, "dump.log")); code != 0 {
		t.Fatalf("dump --evasive-devices: exit %d\n%s\n%s", code, out, readLog(w, "dump.log"))
	}
	select {
	case <-w.Exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", w.Pid)
	}
	rp.Forget(w.Pid)
	restoreDetached(t, w, dir)
	verifyRestored(t, w)
	waitWorkloadExit(t, rp, w)
}
