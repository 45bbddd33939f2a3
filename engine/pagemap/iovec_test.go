package pagemap

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAdvanceRemote(t *testing.T) {
	iov := func() []unix.RemoteIovec {
		return []unix.RemoteIovec{{Base: 0x1000, Len: 0x1000}, {Base: 0x5000, Len: 0x2000}}
	}
	cases := []struct {
		n    int
		want []unix.RemoteIovec
	}{
		{0, iov()},
		{0x800, []unix.RemoteIovec{{Base: 0x1800, Len: 0x800}, {Base: 0x5000, Len: 0x2000}}},
		{0x1000, []unix.RemoteIovec{{Base: 0x5000, Len: 0x2000}}},
		{0x1800, []unix.RemoteIovec{{Base: 0x5800, Len: 0x1800}}},
		{0x3000, []unix.RemoteIovec{}},
	}
	for _, c := range cases {
		got := AdvanceRemote(iov(), c.n)
		if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("AdvanceRemote(%#x) = %#v, want %#v", c.n, got, c.want)
		}
	}
}
