package ptrace

import (
	"testing"
	"unsafe"
)

func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"ptrace_rseq_configuration", unsafe.Sizeof(RseqConfig{}), 24},
		{"ptrace_peeksiginfo_args", unsafe.Sizeof(peekSiginfoArgs{}), 16},
		{"seccomp_metadata", unsafe.Sizeof(seccompMetadata{}), 16},
		{"user_regs_struct", unsafe.Sizeof(Regs{}), 27 * 8},
		{"struct sigaction (kernel)", unsafe.Sizeof(kernelSigaction{}), 32},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}
