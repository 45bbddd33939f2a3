package kernel

import (
	"testing"
	"unsafe"
)

func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"uffdio_api", unsafe.Sizeof(uffdioAPI{}), 24},
		{"uffdio_register", unsafe.Sizeof(uffdioRegister{}), 32},
		{"clone_args", unsafe.Sizeof(cloneArgs{}), 88},
		{"ptrace_rseq_configuration", unsafe.Sizeof(rseqConfig{}), 24},
		{"ptrace_peeksiginfo_args", unsafe.Sizeof(peekSiginfoArgs{}), 16},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.got, c.want)
		}
	}
	// The ioctl numbers encode the sizes too.
	if got := uintptr(uffdioAPIIoctl>>16) & 0x3fff; got != unsafe.Sizeof(uffdioAPI{}) {
		t.Errorf("UFFDIO_API encodes size %d", got)
	}
	if got := uintptr(uffdioRegisterIoctl>>16) & 0x3fff; got != unsafe.Sizeof(uffdioRegister{}) {
		t.Errorf("UFFDIO_REGISTER encodes size %d", got)
	}
}
