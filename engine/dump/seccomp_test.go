package dump

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/crtools/crtools/engine/image/pb"
)

// insn is one classic-BPF instruction.
func insn(code uint16, k uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint16(b, code)
	binary.LittleEndian.PutUint32(b[4:], k)
	return b
}

func TestCheckFilter(t *testing.T) {
	ld := insn(0x20, 0)             // BPF_LD|BPF_W|BPF_ABS
	allow := insn(0x06, 0x7fff0000) // BPF_RET|BPF_K ALLOW
	for _, c := range []struct {
		name string
		prog []byte
		want string // "" ok, else part of the error
	}{
		{"allow", append(append([]byte{}, ld...), allow...), ""},
		{"errno", insn(0x06, 0x00050001), ""},
		{"user notif", append(append([]byte{}, ld...), insn(0x06, 0x7fc00000)...), "SECCOMP_RET_USER_NOTIF (instruction 1)"},
		{"user notif with data", insn(0x06, 0x7fc00007), "SECCOMP_RET_USER_NOTIF"},
		{"ret A", insn(0x16, 0), "BPF_RET|BPF_A"},
		{"torn", []byte{6, 0, 0}, "not whole BPF instructions"},
		// A load whose constant looks like USER_NOTIF is no return.
		{"load of the constant", insn(0x00, 0x7fc00000), ""},
	} {
		err := checkFilter(c.prog)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func seccompCores(n int) []*pb.CoreEntry {
	cs := make([]*pb.CoreEntry, n)
	for i := range cs {
		cs[i] = &pb.CoreEntry{ThreadCore: &pb.ThreadCoreEntry{}}
	}
	return cs
}

// chainOf follows a thread core's filters from its oldest: each one's
// first byte and flags.
func chainOf(t *testing.T, si *seccompImage, tc *pb.ThreadCoreEntry) (out [][2]uint32) {
	t.Helper()
	for i := tc.GetSeccompFilter(); len(out) <= len(si.entries); {
		f := si.entries[i]
		out = append(out, [2]uint32{uint32(f.GetFilter()[0]), f.GetFlags()})
		if f.Prev == nil {
			return out
		}
		i = f.GetPrev()
	}
	t.Fatal("loop")
	return nil
}

func TestSeccompImage(t *testing.T) {
	f := func(b byte, flags uint32) seccompFilter {
		return seccompFilter{prog: []byte{b, 0, 0, 0, 0, 0, 0, 0}, flags: flags}
	}
	var si seccompImage
	// A process whose threads share one chain: TSYNC, the leader only.
	p := seccompCores(2)
	shared := []seccompFilter{f(1, 0), f(2, 2)}
	si.setThreads(p, []threadSeccomp{{mode: 2, filters: shared}, {mode: 2, filters: shared}})
	if got := chainOf(t, &si, p[0].ThreadCore); len(got) != 2 || got[0] != [2]uint32{1, 1} || got[1] != [2]uint32{2, 3} {
		t.Errorf("shared chain %v, want [1 TSYNC] [2 TSYNC|LOG]", got)
	}
	if tc := p[1].ThreadCore; tc.GetSeccompMode() != pb.SeccompMode_disabled || tc.SeccompFilter != nil {
		t.Errorf("second thread of a TSYNC chain: %v %v", tc.GetSeccompMode(), tc.SeccompFilter)
	}
	// A single-threaded process with the same chain shares the entries.
	c := seccompCores(1)
	si.setThreads(c, []threadSeccomp{{mode: 2, filters: shared}})
	if c[0].ThreadCore.GetSeccompFilter() != p[0].ThreadCore.GetSeccompFilter() || len(si.entries) != 2 {
		t.Errorf("same chain: index %d (the first %d), %d entries", c[0].ThreadCore.GetSeccompFilter(), p[0].ThreadCore.GetSeccompFilter(), len(si.entries))
	}
	// Threads that differ: each its own chain, no TSYNC; strict and
	// none as they are.
	m := seccompCores(4)
	si.setThreads(m, []threadSeccomp{{mode: 2, filters: shared}, {mode: 2, filters: append(shared[:2:2], f(3, 0))}, {mode: 1}, {}})
	if got := chainOf(t, &si, m[0].ThreadCore); len(got) != 2 || got[0] != [2]uint32{1, 0} || got[1] != [2]uint32{2, 2} {
		t.Errorf("own chain %v, want [1 0] [2 LOG]", got)
	}
	if got := chainOf(t, &si, m[1].ThreadCore); len(got) != 3 || got[2] != [2]uint32{3, 0} {
		t.Errorf("longer chain %v", got)
	}
	if m[2].ThreadCore.GetSeccompMode() != pb.SeccompMode_strict || m[2].ThreadCore.SeccompFilter != nil ||
		m[3].ThreadCore.GetSeccompMode() != pb.SeccompMode_disabled {
		t.Errorf("strict %v, none %v", m[2].ThreadCore, m[3].ThreadCore)
	}
	if len(si.entries) != 2+2+3 {
		t.Errorf("%d entries, want 7", len(si.entries))
	}
	// CRIU's layout: each chain newest first, the thread at its oldest,
	// whose prev leads to the newer.
	if i := p[0].ThreadCore.GetSeccompFilter(); i != 1 || si.entries[0].Prev != nil || si.entries[1].GetPrev() != 0 {
		t.Errorf("layout: thread at %d, entries %v", i, si.entries[:2])
	}
}
