package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crtools/crtools/engine/image/pb"
)

// fill sets every field of m (recursively, to a small depth) to a value
// derived from seed, so a round trip exercises every field number and
// wire type of the kind.
func fill(m protoreflect.Message, seed int, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.MessageKind && depth > 3 {
			continue
		}
		if fd.IsMap() {
			continue
		}
		v := seed*31 + i
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for j := 0; j < 2; j++ {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					fill(e.Message(), v+j, depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(fd, v+j))
				}
			}
			continue
		}
		if fd.Kind() == protoreflect.MessageKind {
			fill(m.Mutable(fd).Message(), v, depth+1)
			continue
		}
		m.Set(fd, scalar(fd, v))
	}
}

func scalar(fd protoreflect.FieldDescriptor, v int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(v%2 == 1)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(v % vals.Len()).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(-v))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(-v) << 33)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(v) | 0x80000000)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(v)<<40 | 0xfff)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s" + string(rune('a'+v%26)) + " /path with space\n")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{0, byte(v), 0xff})
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(v))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(v))
	}
	panic("unhandled kind " + fd.Kind().String())
}

// payloadFor sets the length fields of m that announce a payload and
// returns a payload of that length.
func payloadFor(k *Kind, m proto.Message, i int) []byte {
	p := bytes.Repeat([]byte{byte('A' + i)}, 10+i)
	switch k.Payload {
	case PayloadPipeData:
		m.(*pb.PipeDataEntry).Bytes = proto.Uint32(uint32(len(p)))
	case PayloadSkQueue:
		m.(*pb.SkPacketEntry).Length = proto.Uint32(uint32(len(p)))
	case PayloadTCPStream:
		m.(*pb.TcpStreamEntry).InqLen = proto.Uint32(4)
		m.(*pb.TcpStreamEntry).OutqLen = proto.Uint32(uint32(len(p) - 4))
	case PayloadGhost:
		m.(*pb.GhostFileEntry).Chunks = proto.Bool(false)
	case PayloadIPCShm:
		m.(*pb.IpcShmEntry).InPagemaps = proto.Bool(false)
		m.(*pb.IpcShmEntry).Size = proto.Uint64(uint64(len(p)))
		return append(p, make([]byte, (4-len(p)%4)%4)...)
	case PayloadIPCSem:
		m.(*pb.IpcSemEntry).Nsems = proto.Uint32(uint32(len(p) / 2))
		return append(p[:len(p)/2*2], make([]byte, (8-len(p)/2*2%8)%8)...)
	case PayloadIPCMsg:
		m.(*pb.IpcMsgEntry).Qnum = proto.Uint32(0) // messages: TestIPCMsgRoundTrip
		return nil
	case PayloadNone:
		return nil
	}
	return p
}

// TestIPCMsgRoundTrip: a SysV message queue image's messages (entries of
// their own, each followed by its padded text) come back with the queue.
func TestIPCMsgRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "ipcns-msg-1.img", IPCMsg)
	must(t, err)
	texts := []string{"one", "", "a text of twelve"}
	for q := 0; q < 2; q++ {
		must(t, w.Write(&pb.IpcMsgEntry{Desc: &pb.IpcDescEntry{Key: proto.Uint32(1), Uid: proto.Uint32(0), Gid: proto.Uint32(0), Cuid: proto.Uint32(0),
			Cgid: proto.Uint32(0), Mode: proto.Uint32(0o600), Id: proto.Uint32(uint32(q))}, Qbytes: proto.Uint32(100), Qnum: proto.Uint32(uint32(len(texts) * q))}))
		for i := 0; i < q*len(texts); i++ {
			must(t, w.Write(&pb.IpcMsg{Mtype: proto.Uint64(uint64(i + 1)), Msize: proto.Uint32(uint32(len(texts[i])))}))
			must(t, w.WriteExtra(append([]byte(texts[i]), make([]byte, (8-len(texts[i])%8)%8)...)))
		}
	}
	must(t, w.Close())
	r, err := NewReader(bytes.NewReader(buf.Bytes()), "ipcns-msg-1.img", nil, int64(buf.Len()), Limits{})
	must(t, err)
	es, err := r.ReadAll()
	must(t, err)
	if len(es) != 2 || len(es[0].Messages) != 0 || len(es[1].Messages) != len(texts) {
		t.Fatalf("read %d queues, want 2 with 0 and %d messages", len(es), len(texts))
	}
	for i, m := range es[1].Messages {
		if m.Msg.GetMtype() != uint64(i+1) || string(m.Text) != texts[i] {
			t.Errorf("message %d: type %d %q, want %d %q", i, m.Msg.GetMtype(), m.Text, i+1, texts[i])
		}
	}
	// A queue cut short names the missing message.
	r, err = NewReader(bytes.NewReader(buf.Bytes()[:buf.Len()-8]), "ipcns-msg-1.img", nil, int64(buf.Len()-8), Limits{})
	must(t, err)
	if _, err := r.ReadAll(); err == nil || !strings.Contains(err.Error(), "ipcns-msg-1.img") {
		t.Errorf("truncated queue: %v", err)
	}
}

// TestRoundTripEveryKind writes two fully populated entries (with their
// payloads) of every kind into a real directory and reads them back.
func TestRoundTripEveryKind(t *testing.T) {
	dir := t.TempDir()
	for _, k := range Kinds {
		if k.Header == HeaderNone {
			continue
		}
		t.Run(k.Pattern, func(t *testing.T) {
			const id = 0x2a
			w, err := Create(dir, k, id)
			if err != nil {
				t.Fatal(err)
			}
			n := 2
			if k.Payload == PayloadGhost || k.Payload == PayloadRest || k.Single {
				n = 1 // the payload runs to the end of the file
			}
			var want []*Entry
			for i := 0; i < n; i++ {
				m := k.NewEntry(i == 0)
				fill(m.ProtoReflect(), i+1, 0)
				p := payloadFor(k, m, i)
				if err := w.Write(m); err != nil {
					t.Fatal(err)
				}
				if err := w.WriteExtra(p); err != nil {
					t.Fatal(err)
				}
				want = append(want, &Entry{Msg: m, Payload: p})
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := OpenPath(k.Path(dir, id), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Kind().Magic != k.Magic || r.Kind().Header != k.Header {
				t.Fatalf("read back as %s", r.Kind())
			}
			r.kind = k // kinds that share a magic are told apart by name only
			got, err := r.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d entries back, want %d", len(got), len(want))
			}
			for i := range want {
				if !proto.Equal(got[i].Msg, want[i].Msg) {
					t.Errorf("entry %d:\n got %v\nwant %v", i, got[i].Msg, want[i].Msg)
				}
				if !bytes.Equal(got[i].Payload, want[i].Payload) {
					t.Errorf("entry %d payload %q, want %q", i, got[i].Payload, want[i].Payload)
				}
			}
		})
	}
}

func TestGhostChunksRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "ghost", GhostFile)
	if err != nil {
		t.Fatal(err)
	}
	g := &pb.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100644), Chunks: proto.Bool(true), Size: proto.Uint64(1 << 20)}
	must(t, w.Write(g))
	must(t, w.Write(&pb.GhostChunkEntry{Len: proto.Uint64(3), Off: proto.Uint64(0)}))
	must(t, w.WriteExtra([]byte("abc")))
	must(t, w.Write(&pb.GhostChunkEntry{Len: proto.Uint64(2), Off: proto.Uint64(1 << 19)}))
	must(t, w.WriteExtra([]byte("yz")))
	must(t, w.Close())
	r, err := NewReader(bytes.NewReader(buf.Bytes()), "ghost", nil, int64(buf.Len()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	es, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || string(es[0].Payload) != "abcyz" || len(es[0].Chunks) != 2 || es[0].Chunks[1].GetOff() != 1<<19 {
		t.Fatalf("chunks read back as %+v", es)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSingleEntryKinds(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "fs", FS)
	must(t, err)
	fs := &pb.FsEntry{CwdId: proto.Uint32(1), RootId: proto.Uint32(2)}
	must(t, w.Write(fs))
	if err := w.Write(fs); err == nil {
		t.Fatal("wrote a second entry into an fs image")
	}
	must(t, w.Close())
	// An fs image with two entries (written by hand) or none is refused.
	two := append(append([]byte(nil), buf.Bytes()...), buf.Bytes()[8:]...)
	r, err := NewReader(bytes.NewReader(two), "fs-1.img", FS, int64(len(two)), Limits{})
	must(t, err)
	var de *DecodeError
	if _, err := r.ReadAll(); !errors.As(err, &de) {
		t.Fatalf("two entries: %v", err)
	}
	r, err = NewReader(bytes.NewReader(buf.Bytes()[:8]), "fs-1.img", FS, 8, Limits{})
	must(t, err)
	var te *TruncatedError
	if _, err := r.ReadAll(); !errors.As(err, &te) {
		t.Fatalf("no entry: %v", err)
	}
}

func TestWriterRefusesWrongType(t *testing.T) {
	w, err := NewWriter(io.Discard, "x", Core)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&pb.PstreeEntry{Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1)}); err == nil {
		t.Fatal("a pstree entry was written into a core image")
	}
	// A message missing required fields cannot be written either.
	if err := w.Write(&pb.CoreEntry{}); err == nil {
		t.Fatal("a core entry without mtype was written")
	}
}

func TestKindByFilename(t *testing.T) {
	for name, want := range map[string]struct {
		k  *Kind
		id uint64
	}{
		"core-11215.img":          {Core, 11215},
		"pagemap-11215.img":       {Pagemap, 11215},
		"pagemap-shmem-13637.img": {ShmemPagemap, 13637},
		"ghost-file-1f.img":       {GhostFile, 0x1f},
		"/a/b/inventory.img":      {Inventory, 0},
		"stats-dump":              {StatsDump, 0},
		"pages-3.img":             {Pages, 3},
		"tcp-stream-a1.img":       {TCPStream, 0xa1},
	} {
		k, id, ok := KindByFilename(name)
		if !ok || k != want.k || id != want.id {
			t.Errorf("%s: got %v %d %v, want %v %d", name, k, id, ok, want.k, want.id)
		}
	}
	for _, name := range []string{"core-.img", "core-x.img", "foo.img", "core-1.img.bak", "pagemap-shmem-.img", "ghost-file-1F.img", "core-1f.img", "core-99999999999999999999999.img", "xcore-1.img"} {
		if k, _, ok := KindByFilename(name); ok {
			t.Errorf("%s taken for %s", name, k)
		}
	}
	for _, k := range Kinds {
		if k.FileName(7) == "" {
			t.Errorf("%s has no file name", k)
		}
		if got, id, ok := KindByFilename(k.FileName(7)); !ok || got != k || (k.HasID() && id != 7) {
			t.Errorf("%s: FileName(7)=%s maps back to %v %d", k, k.FileName(7), got, id)
		}
		if got, id, ok := KindByFilename(k.FileName(4194303)); !ok || got != k || (k.HasID() && id != 4194303) {
			t.Errorf("%s: FileName(4194303)=%s maps back to %v %d", k, k.FileName(4194303), got, id)
		}
	}
	for k, want := range map[*Kind]string{Core: "core-4194303.img", GhostFile: "ghost-file-3fffff.img", TCPStream: "tcp-stream-ff.img", Pstree: "pstree.img"} {
		id := uint64(4194303)
		if k == TCPStream {
			id = 255
		}
		if got := k.FileName(id); got != want {
			t.Errorf("%s.FileName(%d) = %s, want %s", k, id, got, want)
		}
	}
}

// TestHostileInputs: every kind of damage gives its typed error naming the
// file, never a panic or a huge allocation.
func TestHostileInputs(t *testing.T) {
	pst := func(b ...byte) []byte {
		return append([]byte{0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50}, b...)
	}
	good := pst(0x11, 0, 0, 0, 0x08, 0xcf, 0x57, 0x10, 0x00, 0x18, 0xcf, 0x57, 0x20, 0xcf, 0x57, 0x28, 0xcf, 0x57, 0x28, 0xd1, 0x57)
	cases := []struct {
		name string
		data []byte
		kind *Kind
		want any
	}{
		{"empty", nil, nil, &TruncatedError{}},
		{"short header", []byte{0x19, 0x43}, nil, &TruncatedError{}},
		{"random", []byte("this is not an image at all"), nil, &UnknownImageError{}},
		{"unknown magic", append([]byte{0x19, 0x43, 0x56, 0x54}, 1, 2, 3, 4), nil, &UnknownImageError{}},
		{"bad magic", good, Core, &BadMagicError{}},
		{"bad header magic", append([]byte{1, 2, 3, 4}, good[4:]...), Pstree, &BadMagicError{}},
		{"truncated size", pst(0x11, 0), nil, &TruncatedError{}},
		{"truncated entry", good[:len(good)-3], nil, &TruncatedError{}},
		{"huge size", pst(0xff, 0xff, 0xff, 0xff), nil, &LimitError{}},
		{"size past EOF", pst(0x00, 0x00, 0x10, 0x00, 1, 2, 3), nil, &TruncatedError{}},
		{"garbage entry", pst(4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff), nil, &DecodeError{}},
		{"missing required", pst(2, 0, 0, 0, 0x08, 0x01), nil, &DecodeError{}},
		{"pipe data past EOF", []byte{0x19, 0x43, 0x56, 0x54, 0x09, 0x37, 0x45, 0x56, 4, 0, 0, 0, 0x08, 1, 0x10, 0x7f}, nil, &TruncatedError{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(c.data), "bad.img", c.kind, int64(len(c.data)), Limits{MaxEntry: 1 << 20})
			if err == nil {
				_, err = r.ReadAll()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.As(err, &c.want) || !bytes.Contains([]byte(err.Error()), []byte("bad.img")) {
				t.Fatalf("got %T %v, want %T naming the file", err, err, c.want)
			}
		})
	}
	// The same reader without a known size must also stop at the limit
	// rather than allocate.
	huge := pst(0xff, 0xff, 0xff, 0x7f)
	r, err := NewReader(bytes.NewReader(huge), "pipe", nil, -1, Limits{})
	must(t, err)
	var le *LimitError
	if _, err := r.ReadAll(); !errors.As(err, &le) {
		t.Fatalf("got %v, want a LimitError", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, Core, 1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := OpenPath(dir, nil); err == nil {
		t.Fatal("opened a directory")
	}
	path := filepath.Join(dir, "core-1.img")
	must(t, os.WriteFile(path, []byte{0x19, 0x43, 0x56, 0x54, 0x47, 0x38, 0x05, 0x55}, 0o600))
	err := ReadOne(dir, Core, 1, &pb.CoreEntry{})
	var te *TruncatedError
	if !errors.As(err, &te) || te.File != path {
		t.Fatalf("empty core: %v", err)
	}
}

// TestUnknownFieldsSurvive: fields a newer CRIU writes and our .proto files
// lack are kept and written back unchanged.
func TestUnknownFieldsSurvive(t *testing.T) {
	fs := &pb.FsEntry{CwdId: proto.Uint32(1), RootId: proto.Uint32(2)}
	b, err := proto.Marshal(fs)
	must(t, err)
	b = append(b, 0xf8, 0x06, 0x2a) // field 111, varint 42
	in := &pb.FsEntry{}
	must(t, proto.Unmarshal(b, in))
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "fs", FS)
	must(t, err)
	must(t, w.Write(in))
	must(t, w.Close())
	if !bytes.HasSuffix(buf.Bytes(), []byte{0xf8, 0x06, 0x2a}) {
		t.Fatalf("unknown field lost: % x", buf.Bytes())
	}
}
