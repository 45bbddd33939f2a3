package ns

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/test/testenv"
)

// TestCollectSysVRmidForced: reading the SysV objects of a namespace
// whose kernel/shm_rmid_forced is 1 leaves an unattached segment there
// (crtools' own attach and detach to open it must not be its last
// detach), and shm_rmid_forced at 1.
func TestCollectSysVRmidForced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new IPC namespace)")
	}
	if err := testenv.InFreshIPCNS(func() error {
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
	if err := testenv.InFreshIPCNS(func() error {
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
