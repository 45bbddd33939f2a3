package ns

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSysVABISizes: the structures the *ctl calls fill have the kernel's
// sizes and field offsets on x86-64 (struct msqid64_ds, semid64_ds,
// ipc64_perm; checked against glibc's headers with offsetof).
func TestSysVABISizes(t *testing.T) {
	var m msqidDS
	var s semidDS
	for _, c := range []struct {
		what      string
		got, want uintptr
	}{
		{"ipc64_perm", unsafe.Sizeof(unix.SysvIpcPerm{}), 48},
		{"ipc64_perm.mode", unsafe.Offsetof(m.Perm.Mode), 20},
		{"msqid64_ds", unsafe.Sizeof(m), 120},
		{"msqid64_ds.msg_cbytes", unsafe.Offsetof(m.Cbytes), 72},
		{"msqid64_ds.msg_qnum", unsafe.Offsetof(m.Qnum), 80},
		{"msqid64_ds.msg_qbytes", unsafe.Offsetof(m.Qbytes), 88},
		{"msqid64_ds.msg_lspid", unsafe.Offsetof(m.Lspid), 96},
		{"semid64_ds", unsafe.Sizeof(s), 104},
		{"semid64_ds.sem_nsems", unsafe.Offsetof(s.Nsems), 80},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
}
