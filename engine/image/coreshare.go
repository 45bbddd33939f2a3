package image

import (
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/crtools/crtools/engine/image/pb"
)

// CoreShare decodes core entries sharing their byte-identical parts: the
// task_core_entry (signal actions, rlimits, timers: the same in every
// task forked from one program), the FPU state (the same in idle threads)
// and the credentials. A 50-task tree has 2 distinct task_core_entry
// contents of 50, a 50-thread process 2 distinct FPU states: decoding
// each once saves most of the allocations of a core (62 sa_entry and 16
// rlimit_entry messages, each field a pointer of its own, the xsave
// arrays), some 10 KiB of fresh heap per task, which on a guest with
// dear page faults is most of the restore's load step. The messages are
// shared by the entries that hold them: their users must only read them.
// A CoreShare is safe for concurrent use.
type CoreShare struct {
	memo ContentMemo[int, sharedMsg] // by part, then content
}

// The parts of a core entry CoreShare shares.
const (
	sharedTaskCore = iota
	sharedFpregs
	sharedCreds
)

// sharedMsg is one decoded content. ok false: it did not decode (the
// caller falls back to the generated decoder, which says why).
type sharedMsg struct {
	msg any
	ok  bool
}

// shareMsg returns the message of type M decoded from b by its generated
// UnmarshalVT, once per distinct b of part.
func shareMsg[M any, P interface {
	*M
	UnmarshalVT([]byte) error
}](s *CoreShare, part int, b []byte) (P, bool) {
	r := s.memo.Get(part, b, func() sharedMsg {
		p := P(new(M))
		return sharedMsg{p, p.UnmarshalVT(b) == nil}
	})
	if !r.ok {
		return nil, false
	}
	return r.msg.(P), true
}

// NextCore reads the next entry, a core entry, into c as Next does, with
// the parts shared through s (nil: Next).
func (r *Reader) NextCore(c *pb.CoreEntry, s *CoreShare) error {
	if s == nil {
		return r.Next(c)
	}
	return r.next(c, func(b []byte) error {
		if s.decodeCore(b, c) {
			return nil
		}
		// Anything the fast path does not take (an unknown or
		// repeated field, a wrong wire type, a missing required
		// field) the generated decoder decodes or refuses, with its
		// own error.
		return unmarshalEntry(b, c)
	})
}

// Field numbers of core_entry's thread_info, tc and thread_core, and of
// thread_core_entry's creds.
var (
	coreParts       = []protowire.Number{2, 3, 5}
	threadCoreParts = []protowire.Number{10}
)

// decodeCore decodes b into c, sharing its parts, or returns false for
// anything but the plain shape crtools and CRIU write. Fields other than
// thread_info, tc and thread_core go through the generated decoder.
func (s *CoreShare) decodeCore(b []byte, c *pb.CoreEntry) bool {
	var parts [3][]byte
	var rest [64]byte
	res, ok := splitFields(b, rest[:0], coreParts, parts[:])
	ti, tc, thc := parts[0], parts[1], parts[2]
	if !ok {
		return false
	}
	c.Reset()
	if c.UnmarshalVT(res) != nil {
		return false
	}
	if tc != nil {
		m, ok := shareMsg[pb.TaskCoreEntry](s, sharedTaskCore, tc)
		if !ok {
			return false
		}
		c.Tc = m
	}
	if ti != nil {
		if c.ThreadInfo = s.decodeThreadInfo(ti); c.ThreadInfo == nil {
			return false
		}
	}
	if thc != nil {
		if c.ThreadCore = s.decodeThreadCore(thc); c.ThreadCore == nil {
			return false
		}
	}
	return true
}

// decodeThreadInfo decodes a thread_info_x86 (all four of its fields by
// hand: the FPU state, a required field, cannot be left to the generated
// decoder), or returns nil.
func (s *CoreShare) decodeThreadInfo(b []byte) *pb.ThreadInfoX86 {
	ti := &pb.ThreadInfoX86{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && ti.ClearTidAddr == nil:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil
			}
			ti.ClearTidAddr = &v
			b = b[n:]
		case num >= 2 && num <= 4 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil
			}
			b = b[n:]
			switch num {
			case 2:
				if ti.Gpregs != nil {
					return nil
				}
				ti.Gpregs = &pb.UserX86RegsEntry{}
				if ti.Gpregs.UnmarshalVT(v) != nil {
					return nil
				}
			case 3:
				if ti.Fpregs != nil {
					return nil
				}
				m, ok := shareMsg[pb.UserX86FpregsEntry](s, sharedFpregs, v)
				if !ok {
					return nil
				}
				ti.Fpregs = m
			case 4:
				d := &pb.UserDescT{}
				if d.UnmarshalVT(v) != nil {
					return nil
				}
				ti.Tls = append(ti.Tls, d)
			}
		default:
			return nil
		}
	}
	if ti.ClearTidAddr == nil || ti.Gpregs == nil || ti.Fpregs == nil {
		return nil
	}
	return ti
}

// decodeThreadCore decodes a thread_core_entry, its credentials (an
// optional field) shared, the rest by the generated decoder; or returns
// nil.
func (s *CoreShare) decodeThreadCore(b []byte) *pb.ThreadCoreEntry {
	var parts [1][]byte
	var rest [128]byte
	res, ok := splitFields(b, rest[:0], threadCoreParts, parts[:])
	creds := parts[0]
	if !ok {
		return nil
	}
	thc := &pb.ThreadCoreEntry{}
	if thc.UnmarshalVT(res) != nil {
		return nil
	}
	if creds != nil {
		m, ok := shareMsg[pb.CredsEntry](s, sharedCreds, creds)
		if !ok {
			return nil
		}
		thc.Creds = m
	}
	return thc
}

// splitFields walks the fields of the message b: the values of the fields
// numbered nums[i] go to out[i] (each length-delimited, at most once), the
// other fields are appended to res, which it returns. false: b is not well
// formed, or a field of nums has another wire type or appears twice.
func splitFields(b, res []byte, nums []protowire.Number, out [][]byte) ([]byte, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, false
		}
		field := b[:n+m]
		b = b[n+m:]
		i := slices.Index(nums, num)
		if i < 0 {
			res = append(res, field...)
			continue
		}
		if typ != protowire.BytesType || out[i] != nil {
			return nil, false
		}
		// A value of length 0 is field[n+k:n+k], not nil: present.
		out[i], _ = protowire.ConsumeBytes(field[n:])
	}
	return res, true
}
