package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyscallTable(t *testing.T) {
	for name, want := range map[string]int{
		"read": unix.SYS_READ, "open": unix.SYS_OPEN, "close": unix.SYS_CLOSE,
		"getpid": unix.SYS_GETPID, "rt_sigaction": unix.SYS_RT_SIGACTION,
		"_sysctl": 156, "umount2": unix.SYS_UMOUNT2, "newfstatat": unix.SYS_NEWFSTATAT,
		"rseq": unix.SYS_RSEQ, "clone3": unix.SYS_CLONE3, "pidfd_getfd": unix.SYS_PIDFD_GETFD,
		"mseal": 462, "quotactl_fd": 443, "uretprobe": 335,
	} {
		if nr, ok := SyscallNumber(name); !ok || nr != want {
			t.Errorf("SyscallNumber(%q) = %d, %v; want %d", name, nr, ok, want)
		}
		if got := SyscallName(want); got != name {
			t.Errorf("SyscallName(%d) = %q, want %q", want, got, name)
		}
	}
	if _, ok := SyscallNumber("no_such_call"); ok {
		t.Errorf("unknown name found")
	}
	// Dense from 0 to 336 and from 424 on; nothing in the gap the kernel
	// reserves (387..423) nor in the x32 range.
	for nr := 0; nr <= 336; nr++ {
		if SyscallName(nr) == "" {
			t.Errorf("no name for %d", nr)
		}
	}
	for nr := 337; nr < 424; nr++ {
		if SyscallName(nr) != "" {
			t.Errorf("name %q for reserved %d", SyscallName(nr), nr)
		}
	}
	if SyscallName(512) != "" {
		t.Errorf("x32 number present")
	}
}
