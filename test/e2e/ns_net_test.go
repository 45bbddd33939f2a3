package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/harness"
)

// The network test runs in namespaces it makes itself: an "outer" network
// namespace (held by a sleeping process) plays the host, where crtools runs
// and where the outside ends of the veth pairs live; the workload has a
// network namespace of its own. Addresses are from 198.18.0.0/15 (RFC 2544
// benchmarking range) and exist only inside these namespaces.
const (
	netOuterIP = "198.18.0.1"
	netInnerIP = "198.18.0.2"
)

// netnsHolder starts a process in a new network namespace and returns the
// path of that namespace.
func netnsHolder(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start network namespace holder: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}

// inNet runs a command inside the network namespace nsPath.
func inNet(t *testing.T, nsPath string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter --net=%s %v: %v\n%s", nsPath, args, err, out)
	}
	return string(out)
}

// crtoolsInNet runs crtools inside the network namespace nsPath.
func crtoolsInNet(t *testing.T, nsPath string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + nsPath, harness.BuildCrtools(t)}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run crtools %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return code, string(out)
}

// udpEcho serves UDP echo ("pong" + what came) on addr inside nsPath until
// the test ends.
func udpEcho(t *testing.T, nsPath, addr string) {
	t.Helper()
	errc := make(chan error, 1)
	var conn *net.UDPConn
	go func() {
		// The socket belongs to the namespace it is made in; the
		// thread is not given back (it dies with the goroutine).
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ua, _ := net.ResolveUDPAddr("udp4", addr)
		conn, err = net.ListenUDP("udp4", ua)
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("UDP echo on %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 256)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = conn.WriteToUDP(append([]byte("pong-"), buf[:n]...), from)
		}
	}()
}

// netReport asks the workload for its report and returns its lines.
func netReport(t *testing.T, pid int, path string) []string {
	t.Helper()
	_ = os.Remove(path)
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatalf("signal %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			return strings.Split(strings.TrimSpace(string(b)), "\n")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("workload %d wrote no report in 10 s", pid)
	return nil
}

func hasLine(lines []string, prefix string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// linkExists tells whether link name exists in nsPath.
func linkExists(t *testing.T, nsPath, name string) bool {
	t.Helper()
	err := exec.Command("nsenter", "--net="+nsPath, "ip", "link", "show", "dev", name).Run()
	return err == nil
}

// TestNSNetDumpRestore: a workload in its own network namespace (lo up, a
// veth ctr0 with MTU 1400, an address and a static route, its peer outside)
// talks UDP to an echo server outside; it is dumped with -n net, a restore
// that fails after the veth was made leaves no link behind, and a restore
// with --veth-pair ctr0=crt-out1 rebuilds the namespace: the workload sees
// its address, the link keeps MTU, MAC and route, the outside end has the
// mapped name, and UDP works again once the outside end is configured.
func TestNSNetDumpRestore(t *testing.T) {
	harness.RequireRoot(t)
	rp := harness.Subreaper()
	outer := netnsHolder(t)
	bin := buildTestdata(t, "ns_net.c")
	report := filepath.Join(t.TempDir(), "report")
	cmd := exec.Command(bin, report, netOuterIP, "9999")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	inner := fmt.Sprintf("/proc/%d/ns/net", pid)

	inNet(t, outer, "ip", "link", "set", "lo", "up")
	inNet(t, outer, "ip", "link", "add", "crt-out0", "type", "veth", "peer", "name", "ctr0", "netns", fmt.Sprint(pid))
	inNet(t, outer, "ip", "addr", "add", netOuterIP+"/30", "dev", "crt-out0")
	inNet(t, outer, "ip", "link", "set", "crt-out0", "up")
	inNet(t, inner, "ip", "link", "set", "lo", "up")
	inNet(t, inner, "ip", "link", "set", "ctr0", "mtu", "1400", "address", "02:00:00:c7:12:02")
	inNet(t, inner, "ip", "addr", "add", netInnerIP+"/30", "dev", "ctr0")
	inNet(t, inner, "ip", "link", "set", "ctr0", "up")
	inNet(t, inner, "ip", "route", "add", "198.18.5.0/24", "via", netOuterIP)
	udpEcho(t, outer, netOuterIP+":9999")

	before := netReport(t, pid, report)
	if l := hasLine(before, "addr ctr0 "); l != "addr ctr0 "+netInnerIP {
		t.Fatalf("workload before the dump: %q, want addr ctr0 %s\n%v", l, netInnerIP, before)
	}
	if l := hasLine(before, "udp "); !strings.HasPrefix(l, "udp pong-ping ") {
		t.Fatalf("workload before the dump: UDP %q, want a pong\n%v", l, before)
	}
	linkBefore := inNet(t, inner, "ip", "-o", "link", "show", "dev", "ctr0")

	dir := filepath.Join(t.TempDir(), "images")
	dlog := filepath.Join(t.TempDir(), "dump.log")
	code, out := crtoolsInNet(t, outer, "dump", "-t", fmt.Sprint(pid), "-D", dir, "-n", "net", "-v", "2", "-o", dlog)
	if code != 0 {
		b, _ := os.ReadFile(dlog)
		t.Fatalf("crtools dump -n net: exit %d\n%s\n%s", code, out, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("dumped workload %d did not die", pid)
	}
	rp.Forget(pid)
	for _, g := range []string{"netdev-*.img", "net-*.json"} {
		if m, _ := filepath.Glob(filepath.Join(dir, g)); len(m) != 1 {
			t.Errorf("images: %d files %s, want 1", len(m), g)
		}
	}
	// The namespace died with the workload, and its veth pair with it.
	for deadline := time.Now().Add(10 * time.Second); linkExists(t, outer, "crt-out0"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("crt-out0 still exists 10 s after the workload died")
		}
	}

	// A restore that fails after the veth pair was made (a route whose
	// gateway is on no link of the namespace) removes it again.
	broken := copyDir(t, dir)
	for _, n := range harness.DirNames(t, broken) {
		if !strings.HasPrefix(n, "net-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(broken, n))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"gw": "`+netOuterIP+`"`) {
			t.Fatalf("%s has no route via %s:\n%s", n, netOuterIP, b)
		}
		b = []byte(strings.ReplaceAll(string(b), `"gw": "`+netOuterIP+`"`, `"gw": "198.18.9.9"`))
		if err := os.WriteFile(filepath.Join(broken, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out = crtoolsInNet(t, outer, "restore", "-D", broken, "-d", "--veth-pair", "ctr0=crt-out1")
	if code == 0 || !strings.Contains(out, "add route to 198.18.5.0/24") {
		t.Fatalf("restore with a bad route: exit %d, want a failure adding it:\n%s", code, out)
	}
	if linkExists(t, outer, "crt-out1") {
		t.Errorf("a failed restore left the link crt-out1 behind:\n%s", out)
	}
	if err := unix.Kill(pid, 0); err == nil {
		t.Errorf("a failed restore left task %d behind", pid)
	}
	rp.Forget(pid)

	rlog := filepath.Join(t.TempDir(), "restore.log")
	code, out = crtoolsInNet(t, outer, "restore", "-D", dir, "-d", "--veth-pair", "ctr0=crt-out1", "-v", "2", "-o", rlog)
	if code != 0 {
		b, _ := os.ReadFile(rlog)
		t.Fatalf("crtools restore --veth-pair ctr0=crt-out1: exit %d\n%s\n%s", code, out, b)
	}
	if nsOf(t, fmt.Sprint(pid), "net") == nsOf(t, "self", "net") {
		t.Fatalf("restored task %d is in the test's network namespace", pid)
	}
	if !linkExists(t, outer, "crt-out1") {
		t.Fatal("no outside end crt-out1 after the restore")
	}
	if linkAfter := inNet(t, inner, "ip", "-o", "link", "show", "dev", "ctr0"); !strings.Contains(linkAfter, "mtu 1400") ||
		!strings.Contains(linkAfter, "02:00:00:c7:12:02") || !strings.Contains(linkAfter, "UP") {
		t.Errorf("restored ctr0: %s\nbefore the dump: %s", linkAfter, linkBefore)
	}
	if lo := inNet(t, inner, "ip", "-o", "link", "show", "dev", "lo"); !strings.Contains(lo, "UP") {
		t.Errorf("restored lo is not up: %s", lo)
	}
	if routes := inNet(t, inner, "ip", "route"); !strings.Contains(routes, "198.18.5.0/24 via "+netOuterIP+" dev ctr0") {
		t.Errorf("restored routes lack 198.18.5.0/24 via %s:\n%s", netOuterIP, routes)
	}
	// The outside end is the caller's to configure (as with CRIU).
	inNet(t, outer, "ip", "addr", "add", netOuterIP+"/30", "dev", "crt-out1")
	inNet(t, outer, "ip", "link", "set", "crt-out1", "up")
	after := netReport(t, pid, report)
	if l := hasLine(after, "addr ctr0 "); l != "addr ctr0 "+netInnerIP {
		t.Errorf("restored workload: %q, want addr ctr0 %s\n%v", l, netInnerIP, after)
	}
	if l := hasLine(after, "addr lo "); l != "addr lo 127.0.0.1" {
		t.Errorf("restored workload: %q, want addr lo 127.0.0.1\n%v", l, after)
	}
	if l := hasLine(after, "udp "); !strings.HasPrefix(l, "udp pong-ping ") {
		t.Errorf("restored workload: UDP %q, want a pong from outside\n%v", l, after)
	}
	var cb, ca int
	fmt.Sscanf(hasLine(before, "counter "), "counter %d", &cb)
	fmt.Sscanf(hasLine(after, "counter "), "counter %d", &ca)
	if ca < cb {
		t.Errorf("restored counter %d is behind the one before the dump %d", ca, cb)
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, rp, pid, 0)
}

// TestNSNetRefusesSocket: a task in a network namespace of its own that
// holds a socket is refused by dump -n net, naming the descriptor (the
// check uses the descriptors the dump collected), and runs on untouched.
// Its sockets are a pair made in the test's namespace (sock_diag there
// reports them, so the descriptors themselves dump; sockets of the task's
// own namespace are refused earlier, sock_diag not finding them).
func TestNSNetRefusesSocket(t *testing.T) {
	harness.RequireRoot(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
	cmd := exec.Command("sleep", "1000")
	cmd.ExtraFiles = []*os.File{a, b} // fds 3 and 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: unix.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sock, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", pid))
	if err != nil || !strings.HasPrefix(sock, "socket:") {
		t.Fatalf("fd 3 of the workload: %q, %v; want a socket", sock, err)
	}
	dir := filepath.Join(t.TempDir(), "images")
	code, out := crtools(t, "dump", "-t", fmt.Sprint(pid), "-D", dir, "-n", "net")
	want := fmt.Sprintf("task %d holds a socket (fd 3, %s)", pid, sock)
	if code == 0 || !strings.Contains(out, want) {
		t.Fatalf("dump -n net of a task holding a socket: exit %d, want a refusal with %q:\n%s", code, want, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a refused dump left %s (%v)", dir, err)
	}
	// Untraced and back in its sleep: right after the detach it may
	// still be running on its way back into nanosleep.
	waitState(t, pid, "S")
	if tr := tracerOf(pid); tr != 0 {
		t.Fatalf("workload after the refused dump: tracer %d, want none", tr)
	}
}
