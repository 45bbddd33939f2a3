package restore

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/ptrace"
)

func neg(e int64) uint64 { return uint64(-e) }

// restartSyscall leaves -ERESTART* to the kernel's signal code (orig_rax
// kept, RIP after the syscall), turns -ERESTART_RESTARTBLOCK into
// -ERESTARTNOHAND with arguments for re-issuing, and disarms the kernel's
// restart logic (orig_rax -1) for everything else.
func TestRestartSyscall(t *testing.T) {
	const ip = 0x401002
	cases := []struct {
		name string
		in   ptrace.Regs
		want ptrace.Regs
	}{
		{"pause", ptrace.Regs{Orig_rax: unix.SYS_PAUSE, Rax: neg(errRestartNoHand), Rip: ip},
			ptrace.Regs{Orig_rax: unix.SYS_PAUSE, Rax: neg(errRestartNoHand), Rip: ip}},
		{"read", ptrace.Regs{Orig_rax: unix.SYS_READ, Rax: neg(errRestartSys), Rip: ip, Rdi: 3},
			ptrace.Regs{Orig_rax: unix.SYS_READ, Rax: neg(errRestartSys), Rip: ip, Rdi: 3}},
		{"nanosleep", ptrace.Regs{Orig_rax: unix.SYS_NANOSLEEP, Rax: neg(errRestartRestartBlock), Rip: ip, Rdi: 0x1000, Rsi: 0x2000},
			ptrace.Regs{Orig_rax: unix.SYS_NANOSLEEP, Rax: neg(errRestartNoHand), Rip: ip, Rdi: 0x2000, Rsi: 0x2000}},
		{"nanosleep without rem", ptrace.Regs{Orig_rax: unix.SYS_NANOSLEEP, Rax: neg(errRestartRestartBlock), Rip: ip, Rdi: 0x1000},
			ptrace.Regs{Orig_rax: unix.SYS_NANOSLEEP, Rax: neg(errRestartNoHand), Rip: ip, Rdi: 0x1000}},
		{"relative clock_nanosleep", ptrace.Regs{Orig_rax: unix.SYS_CLOCK_NANOSLEEP, Rax: neg(errRestartRestartBlock), Rip: ip, Rdx: 0x1000, R10: 0x2000},
			ptrace.Regs{Orig_rax: unix.SYS_CLOCK_NANOSLEEP, Rax: neg(errRestartNoHand), Rip: ip, Rdx: 0x2000, R10: 0x2000}},
		{"absolute clock_nanosleep", ptrace.Regs{Orig_rax: unix.SYS_CLOCK_NANOSLEEP, Rax: neg(errRestartRestartBlock), Rip: ip, Rsi: unix.TIMER_ABSTIME, Rdx: 0x1000, R10: 0x2000},
			ptrace.Regs{Orig_rax: unix.SYS_CLOCK_NANOSLEEP, Rax: neg(errRestartNoHand), Rip: ip, Rsi: unix.TIMER_ABSTIME, Rdx: 0x1000, R10: 0x2000}},
		{"restart_syscall", ptrace.Regs{Orig_rax: unix.SYS_RESTART_SYSCALL, Rax: neg(errRestartRestartBlock), Rip: ip},
			ptrace.Regs{Orig_rax: ^uint64(0), Rax: neg(int64(unix.EINTR)), Rip: ip}},
		{"finished syscall", ptrace.Regs{Orig_rax: unix.SYS_GETPID, Rax: 42, Rip: ip},
			ptrace.Regs{Orig_rax: ^uint64(0), Rax: 42, Rip: ip}},
		{"not in a syscall", ptrace.Regs{Orig_rax: ^uint64(0), Rax: neg(errRestartNoHand), Rip: ip},
			ptrace.Regs{Orig_rax: ^uint64(0), Rax: neg(errRestartNoHand), Rip: ip}},
	}
	for _, c := range cases {
		got := c.in
		restartSyscall(&got)
		if got != c.want {
			t.Errorf("%s: got orig_rax %#x rax %#x rip %#x rdi %#x rdx %#x, want orig_rax %#x rax %#x rip %#x rdi %#x rdx %#x", c.name,
				got.Orig_rax, got.Rax, got.Rip, got.Rdi, got.Rdx, c.want.Orig_rax, c.want.Rax, c.want.Rip, c.want.Rdi, c.want.Rdx)
		}
	}
}
