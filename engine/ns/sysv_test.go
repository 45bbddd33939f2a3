package ns

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCollectSysVRmidForced: reading the SysV objects of a namespace
// whose kernel/shm_rmid_forced is 1 leaves an unattached segment there
// (crtools' own attach and detach to open it must not be its last
// detach), and shm_rmid_forced at 1.
func TestCollectSysVRmidForced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new IPC namespace)")
	}
	if err := inFreshIPCNS(func() error {
		if err := os.WriteFile("/proc/sys/kernel/shm_rmid_forced", []byte("1"), 0); err != nil {
			return err
		}
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
		if err != nil {
			return err
		}
		d, err := collectSysV()
		if err != nil {
			return err
		}
		defer d.close()
		if len(d.shm) != 1 {
			t.Errorf("collected %d segments, want 1", len(d.shm))
		}
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil {
			t.Errorf("segment %d after the collect: %v", id, err)
		}
		if b, err := os.ReadFile("/proc/sys/kernel/shm_rmid_forced"); err != nil || string(b) != "1\n" {
			t.Errorf("shm_rmid_forced after the collect: %q %v", b, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCollectSysVMsgmaxLowered: a message larger than the namespace's
// kernel/msgmax (lowered after it was sent) is read whole, and msgmax is
// left as it was.
func TestCollectSysVMsgmaxLowered(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new IPC namespace)")
	}
	if err := inFreshIPCNS(func() error {
		id, err := msgget(0, ipcCreat|0o600)
		if err != nil {
			return err
		}
		buf := make([]byte, 8+5000)
		buf[0] = 7 // mtype
		for i := range buf[8:] {
			buf[8+i] = byte(i)
		}
		if err := msgsnd(id, buf); err != nil {
			return err
		}
		if err := os.WriteFile("/proc/sys/kernel/msgmax", []byte("100"), 0); err != nil {
			return err
		}
		d, err := collectSysV()
		if err != nil {
			t.Errorf("collect: %v", err)
			return nil
		}
		defer d.close()
		if len(d.msg) != 1 || len(d.msg[0].msgs) != 1 || d.msg[0].msgs[0].mtype != 7 || string(d.msg[0].msgs[0].text) != string(buf[8:]) {
			t.Errorf("collected queues %+v, want one message of type 7 and 5000 bytes", d.msg)
		}
		if b, err := os.ReadFile("/proc/sys/kernel/msgmax"); err != nil || string(b) != "100\n" {
			t.Errorf("msgmax after the collect: %q %v", b, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// inFreshIPCNS runs fn on a thread of its own in a new IPC namespace and
// puts the thread back into the test's namespace after: the thread may be
// the main one, whose namespace /proc/self/ns/ipc shows, which later
// tests compare tasks with (a thread left in the new namespace made the
// dump tests after this one fail 1 run in 9).
func inFreshIPCNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/ipc")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		if err := unix.Unshare(unix.CLONE_NEWIPC); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWIPC); err != nil {
			// No UnlockOSThread: the thread exits with this goroutine
			// (or, the main thread, stays out of the runtime's use).
			errc <- fmt.Errorf("back to the test's IPC namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
