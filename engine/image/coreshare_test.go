package image

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
)

// coreImage is a core image holding the entry body b (not checked).
func coreImage(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "core", Core)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	img = append(img, byte(len(b)), byte(len(b)>>8), byte(len(b)>>16), byte(len(b)>>24))
	return append(img, b...)
}

// readCoreBoth decodes the core image img with Next on a stream and with
// NextCore (through s) on the bytes, and fails unless both give equal
// entries or the same error.
func readCoreBoth(t testing.TB, name string, img []byte, s *CoreShare) *pb.CoreEntry {
	t.Helper()
	var want, got pb.CoreEntry
	var errWant, errGot error
	if r, err := NewReader(bytes.NewReader(img), name, Core, int64(len(img)), Limits{}); err != nil {
		errWant = err
	} else {
		errWant = r.Next(&want)
	}
	if r, err := NewBytesReader(img, name, Core, Limits{}); err != nil {
		errGot = err
	} else {
		errGot = r.NextCore(&got, s)
	}
	if fmt.Sprint(errGot) != fmt.Sprint(errWant) {
		t.Fatalf("%s: NextCore: %v, Next: %v", name, errGot, errWant)
	}
	if errWant != nil {
		return nil
	}
	if !proto.Equal(&got, &want) {
		t.Fatalf("%s: NextCore gives\n%v\nNext gives\n%v", name, &got, &want)
	}
	return &got
}

// TestCoreShareFixture: the cores of the CRIU 4.2 fixture and a fully
// populated core decode with NextCore as with Next, and the cores of one
// tree share their identical parts.
func TestCoreShareFixture(t *testing.T) {
	s := &CoreShare{}
	names, _ := filepath.Glob(filepath.Join(criuDir, "core-*.img"))
	if len(names) < 3 {
		t.Fatalf("fixture cores: %v", names)
	}
	var cores []*pb.CoreEntry
	for _, n := range names {
		img, err := os.ReadFile(n)
		must(t, err)
		cores = append(cores, readCoreBoth(t, n, img, s))
	}
	// The fixture's tasks were forked from one program: their creds
	// are the same, and so one message.
	for _, c := range cores[1:] {
		if c.GetThreadCore().GetCreds() != cores[0].GetThreadCore().GetCreds() {
			t.Errorf("creds not shared between cores of one tree")
		}
	}
	for seed := 1; seed <= 2; seed++ {
		m := filled(t, (&pb.CoreEntry{}).ProtoReflect().Type(), seed)
		b, err := proto.Marshal(m)
		must(t, err)
		c1 := readCoreBoth(t, "filled", coreImage(t, b), s)
		c2 := readCoreBoth(t, "filled", coreImage(t, b), s)
		if c1.Tc != c2.Tc || c1.ThreadInfo.Fpregs != c2.ThreadInfo.Fpregs || c1.ThreadCore.Creds != c2.ThreadCore.Creds {
			t.Errorf("identical parts of two cores not shared")
		}
		if c1.ThreadInfo.Gpregs == c2.ThreadInfo.Gpregs || c1.ThreadInfo == c2.ThreadInfo {
			t.Errorf("registers shared")
		}
	}
}

// TestCoreShareOddShapes: cores the fast path does not take (repeated,
// unknown or mistyped fields, missing required ones, nested damage) give
// what the generated decoder gives, entries or errors.
func TestCoreShareOddShapes(t *testing.T) {
	base := &pb.CoreEntry{
		Mtype: pb.CoreEntry_X86_64.Enum(),
		ThreadInfo: &pb.ThreadInfoX86{ClearTidAddr: proto.Uint64(7),
			Gpregs: filled(t, (&pb.UserX86RegsEntry{}).ProtoReflect().Type(), 1).(*pb.UserX86RegsEntry),
			Fpregs: filled(t, (&pb.UserX86FpregsEntry{}).ProtoReflect().Type(), 1).(*pb.UserX86FpregsEntry),
			Tls:    []*pb.UserDescT{filled(t, (&pb.UserDescT{}).ProtoReflect().Type(), 1).(*pb.UserDescT)}},
		Tc:         filled(t, (&pb.TaskCoreEntry{}).ProtoReflect().Type(), 1).(*pb.TaskCoreEntry),
		ThreadCore: filled(t, (&pb.ThreadCoreEntry{}).ProtoReflect().Type(), 1).(*pb.ThreadCoreEntry),
	}
	enc := func(m proto.Message) []byte {
		b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
		must(t, err)
		return b
	}
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	ti, tc, thc := enc(base.ThreadInfo), enc(base.Tc), enc(base.ThreadCore)
	cases := map[string][]byte{
		"plain":               enc(base),
		"thread_info twice":   append(enc(base), field(2, ti)...),
		"tc twice":            append(enc(base), field(3, tc)...),
		"thread_core twice":   append(enc(base), field(5, thc)...),
		"unknown field":       append(enc(base), field(99, []byte("x"))...),
		"tc as varint":        protowire.AppendVarint(protowire.AppendTag(enc(base), 3, protowire.VarintType), 1),
		"empty tc":            append(enc(&pb.CoreEntry{Mtype: base.Mtype}), field(3, nil)...),
		"no mtype":            field(3, tc),
		"only mtype":          enc(&pb.CoreEntry{Mtype: base.Mtype}),
		"cut in a field":      enc(base)[:len(enc(base))-3],
		"cut in a tag":        append(enc(base), 0x80),
		"bad tc":              append(enc(&pb.CoreEntry{Mtype: base.Mtype}), field(3, []byte{0xff, 0xff})...),
		"tc missing required": append(enc(&pb.CoreEntry{Mtype: base.Mtype}), field(3, enc(&pb.TaskCoreEntry{TaskState: proto.Uint32(1)}))...),
	}
	// thread_info: each field dropped, doubled, mistyped, unknown.
	tiFields := map[string][]byte{
		"no clear_tid_addr": enc(&pb.ThreadInfoX86{Gpregs: base.ThreadInfo.Gpregs, Fpregs: base.ThreadInfo.Fpregs}),
		"no gpregs":         enc(&pb.ThreadInfoX86{ClearTidAddr: proto.Uint64(1), Fpregs: base.ThreadInfo.Fpregs}),
		"no fpregs":         enc(&pb.ThreadInfoX86{ClearTidAddr: proto.Uint64(1), Gpregs: base.ThreadInfo.Gpregs}),
		"fpregs twice":      append(ti, field(3, enc(base.ThreadInfo.Fpregs))...),
		"gpregs twice":      append(ti, field(2, enc(base.ThreadInfo.Gpregs))...),
		"addr twice":        protowire.AppendVarint(protowire.AppendTag(ti, 1, protowire.VarintType), 9),
		"addr as bytes":     append(enc(&pb.ThreadInfoX86{Gpregs: base.ThreadInfo.Gpregs, Fpregs: base.ThreadInfo.Fpregs}), field(1, []byte{1})...),
		"two tls":           append(ti, field(4, enc(base.ThreadInfo.Tls[0]))...),
		"unknown":           append(ti, field(50, nil)...),
		"bad fpregs":        append(enc(&pb.ThreadInfoX86{ClearTidAddr: proto.Uint64(1), Gpregs: base.ThreadInfo.Gpregs}), field(3, []byte{8})...),
		"bad tls":           append(ti, field(4, []byte{0xff})...),
	}
	for n, v := range tiFields {
		cases["thread_info "+n] = append(enc(&pb.CoreEntry{Mtype: base.Mtype}), field(2, v)...)
	}
	thcFields := map[string][]byte{
		"creds twice":       append(thc, field(10, enc(base.ThreadCore.Creds))...),
		"creds as varint":   protowire.AppendVarint(protowire.AppendTag(enc(&pb.ThreadCoreEntry{FutexRla: proto.Uint64(1), FutexRlaLen: proto.Uint32(2)}), 10, protowire.VarintType), 1),
		"no futex_rla":      enc(&pb.ThreadCoreEntry{FutexRlaLen: proto.Uint32(2), Creds: base.ThreadCore.Creds}),
		"bad creds":         append(enc(&pb.ThreadCoreEntry{FutexRla: proto.Uint64(1), FutexRlaLen: proto.Uint32(2)}), field(10, []byte{0xff})...),
		"creds no required": append(enc(&pb.ThreadCoreEntry{FutexRla: proto.Uint64(1), FutexRlaLen: proto.Uint32(2)}), field(10, nil)...),
		"unknown":           append(thc, field(70, []byte("y"))...),
	}
	for n, v := range thcFields {
		cases["thread_core "+n] = append(enc(&pb.CoreEntry{Mtype: base.Mtype}), field(5, v)...)
	}
	for name, b := range cases {
		// A fresh CoreShare, and one that has seen every case: a
		// shared part decoded before must not change the result.
		readCoreBoth(t, name, coreImage(t, b), &CoreShare{})
	}
	s := &CoreShare{}
	for range 2 {
		for name, b := range cases {
			readCoreBoth(t, name, coreImage(t, b), s)
		}
	}
}

// FuzzCoreShare: for any bytes, NextCore and Next agree.
func FuzzCoreShare(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join(criuDir, "core-*.img"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[8+4:])
	}
	s := &CoreShare{}
	f.Fuzz(func(t *testing.T, b []byte) {
		readCoreBoth(t, "fuzz", coreImage(t, b), s)
	})
}

// TestBytesReaderMatchesStream: every image of the CRIU fixture, whole and
// cut at every length (the small ones) or at a few, reads the same with
// NewBytesReader as with NewReader on a stream: the same entries and
// payloads, the same error.
func TestBytesReaderMatchesStream(t *testing.T) {
	names, _ := filepath.Glob(filepath.Join(criuDir, "*.img"))
	n := 0
	for _, name := range names {
		k, _, ok := KindByFilename(name)
		if !ok || k.Header == HeaderNone {
			continue
		}
		img, err := os.ReadFile(name)
		must(t, err)
		cuts := []int{len(img), 0, 3, 4, 7, 8, 12, len(img) - 1, len(img) / 2}
		if len(img) < 4096 {
			cuts = cuts[:0]
			for i := 0; i <= len(img); i++ {
				cuts = append(cuts, i)
			}
		}
		for _, cut := range cuts {
			if cut < 0 || cut > len(img) {
				continue
			}
			b := img[:cut]
			want, errWant := readAllFrom(NewReader(bytes.NewReader(b), name, k, int64(len(b)), Limits{}))
			got, errGot := readAllFrom(NewBytesReader(b, name, k, Limits{}))
			if fmt.Sprint(errGot) != fmt.Sprint(errWant) {
				t.Fatalf("%s cut at %d: bytes reader: %v, stream: %v", name, cut, errGot, errWant)
			}
			if len(got) != len(want) {
				t.Fatalf("%s cut at %d: %d entries, want %d", name, cut, len(got), len(want))
			}
			for i := range got {
				if !proto.Equal(got[i].Msg, want[i].Msg) || !bytes.Equal(got[i].Payload, want[i].Payload) || len(got[i].Chunks) != len(want[i].Chunks) {
					t.Fatalf("%s cut at %d: entry %d differs", name, cut, i)
				}
			}
			if k.head != nil { // a pagemap: DecodePagemap too
				want, errWant := decodePagemapFrom(NewReader(bytes.NewReader(b), name, k, int64(len(b)), Limits{}))
				got, errGot := decodePagemapFrom(NewBytesReader(b, name, k, Limits{}))
				if fmt.Sprint(errGot) != fmt.Sprint(errWant) || fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("%s cut at %d: DecodePagemap from bytes: %v %v, from a stream: %v %v", name, cut, got, errGot, want, errWant)
				}
				if got != nil && cut == len(img) && (len(got.Runs) == 0 || cap(got.Runs) != len(got.Runs)) {
					t.Errorf("%s: %d runs in a slice of %d", name, len(got.Runs), cap(got.Runs))
				}
			}
			n++
		}
	}
	if n < 1000 {
		t.Fatalf("only %d cases", n)
	}
}

func decodePagemapFrom(r *Reader, err error) (*PageIndex, error) {
	if err != nil {
		return nil, err
	}
	return DecodePagemap(r)
}

func readAllFrom(r *Reader, err error) ([]*Entry, error) {
	if err != nil {
		return nil, err
	}
	es, err := r.ReadAll()
	if err == io.EOF {
		err = fmt.Errorf("unexpected io.EOF")
	}
	return es, err
}

// TestBytesReaderPayloadCopied: a payload read from a bytes reader is a
// copy: the caller may reuse the buffer (restore's load does).
func TestBytesReaderPayloadCopied(t *testing.T) {
	img, err := os.ReadFile(filepath.Join(criuDir, "pipes-data.img"))
	must(t, err)
	buf := append([]byte(nil), img...)
	es, err := readAllFrom(NewBytesReader(buf, "pipes-data.img", PipesData, Limits{}))
	must(t, err)
	var before [][]byte
	for _, e := range es {
		before = append(before, append([]byte(nil), e.Payload...))
	}
	for i := range buf {
		buf[i] = 0xa5
	}
	for i, e := range es {
		if !bytes.Equal(e.Payload, before[i]) {
			t.Fatalf("payload %d changed with the buffer", i)
		}
	}
	if len(es) == 0 || len(before[0]) == 0 {
		t.Fatalf("no payload in the fixture's pipes-data.img")
	}
}

// TestExists: present images (and a directory in an image's place, as
// with os.Stat) exist, missing ones and those of a missing directory not.
func TestExists(t *testing.T) {
	if !Exists(criuDir, Core, 11215) || !Exists(criuDir, Inventory, 0) {
		t.Errorf("fixture images not found")
	}
	if Exists(criuDir, Core, 1) || Exists(filepath.Join(criuDir, "nope"), Inventory, 0) {
		t.Errorf("missing images found")
	}
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "inventory.img"), 0o700))
	if !Exists(dir, Inventory, 0) {
		t.Errorf("a directory named inventory.img does not exist")
	}
}
