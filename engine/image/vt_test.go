package image

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/crtools/crtools/engine/image/pb"
)

// entryTypes lists every message type an image entry can hold or nest,
// found from the kinds' entry types through their message fields.
func entryTypes(t *testing.T) []protoreflect.MessageType {
	t.Helper()
	roots := []proto.Message{&pb.GhostChunkEntry{}}
	for _, k := range Kinds {
		for _, first := range []bool{true, false} {
			if m := k.NewEntry(first); m != nil {
				roots = append(roots, m)
			}
		}
	}
	seen := map[protoreflect.FullName]bool{}
	var out []protoreflect.MessageType
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
		if err != nil {
			t.Fatalf("%s: %v", md.FullName(), err)
		}
		out = append(out, mt)
		for i := 0; i < md.Fields().Len(); i++ {
			if fd := md.Fields().Get(i); fd.Message() != nil {
				walk(fd.Message())
			}
		}
	}
	for _, m := range roots {
		walk(m.ProtoReflect().Descriptor())
	}
	if len(out) < 60 {
		t.Fatalf("found only %d entry types", len(out))
	}
	return out
}

// filled is a message of type mt with every field set (to a small depth)
// and every required field set at any depth, so that it encodes.
func filled(t *testing.T, mt protoreflect.MessageType, seed int) proto.Message {
	t.Helper()
	m := mt.New()
	fill(m, seed, 0)
	if err := proto.CheckInitialized(m.Interface()); err != nil {
		t.Fatalf("%s: filled message does not encode: %v", mt.Descriptor().FullName(), err)
	}
	return m.Interface()
}

// TestVTMatchesReflectionEveryType: for a fully populated message of every
// entry type, the generated encoder gives proto.Marshal's bytes and the
// generated decoder reads them back to an equal message.
func TestVTMatchesReflectionEveryType(t *testing.T) {
	for _, mt := range entryTypes(t) {
		if _, ok := mt.New().Interface().(vtMessage); !ok {
			t.Errorf("%s has no generated encoder and decoder (run go generate ./engine/image/pb)", mt.Descriptor().FullName())
			continue
		}
		for seed := 1; seed <= 2; seed++ {
			m := filled(t, mt, seed)
			ref, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			vt, err := appendEntry(nil, m)
			if err != nil {
				t.Fatalf("%s: %v", mt.Descriptor().FullName(), err)
			}
			if !bytes.Equal(vt[4:], ref) {
				t.Errorf("%s: MarshalVT gives\n% x\nproto.Marshal gives\n% x", mt.Descriptor().FullName(), vt[4:], ref)
			}
			back := mt.New().Interface()
			if err := unmarshalEntry(ref, back); err != nil {
				t.Fatalf("%s: UnmarshalVT: %v", mt.Descriptor().FullName(), err)
			}
			if !proto.Equal(back, m) {
				t.Errorf("%s: UnmarshalVT gives\n%v\nwant\n%v", mt.Descriptor().FullName(), back, m)
			}
			// Decoding replaces what the message held, as
			// proto.Unmarshal does.
			if err := unmarshalEntry(ref, back); err != nil || !proto.Equal(back, m) {
				t.Errorf("%s: decoding into a used message merged: %v", mt.Descriptor().FullName(), err)
			}
		}
	}
}

// TestVTRequiredFields: a message missing any one required field, at the
// top or one message down, can be neither encoded nor decoded, and the
// error names the field, as with protobuf-go.
func TestVTRequiredFields(t *testing.T) {
	checked := 0
	for _, mt := range entryTypes(t) {
		md := mt.Descriptor()
		check := func(m proto.Message, field protoreflect.Name, where string) {
			t.Helper()
			checked++
			if _, err := proto.Marshal(m); err == nil {
				t.Fatalf("%s without %s: proto.Marshal accepts it", md.FullName(), where)
			}
			if _, err := appendEntry(nil, m); err == nil || !strings.Contains(err.Error(), string(field)) {
				t.Errorf("%s without %s: MarshalVT says %v", md.FullName(), where, err)
			}
			b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(b, mt.New().Interface()); err == nil {
				t.Fatalf("%s without %s: proto.Unmarshal accepts it", md.FullName(), where)
			}
			if err := unmarshalEntry(b, mt.New().Interface()); err == nil || !strings.Contains(err.Error(), string(field)) {
				t.Errorf("%s without %s: UnmarshalVT says %v", md.FullName(), where, err)
			}
		}
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			if fd.Cardinality() == protoreflect.Required {
				m := filled(t, mt, 1)
				m.ProtoReflect().Clear(fd)
				check(m, fd.Name(), string(fd.Name()))
			}
			// One message down: the nested message lacks a required
			// field.
			if fd.Message() == nil || fd.IsList() {
				continue
			}
			sub := fd.Message()
			for j := 0; j < sub.Fields().Len(); j++ {
				sfd := sub.Fields().Get(j)
				if sfd.Cardinality() != protoreflect.Required {
					continue
				}
				m := filled(t, mt, 1)
				m.ProtoReflect().Mutable(fd).Message().Clear(sfd)
				check(m, sfd.Name(), string(fd.Name())+"."+string(sfd.Name()))
			}
		}
	}
	if checked < 100 {
		t.Fatalf("checked only %d missing required fields", checked)
	}
}

// appendScalar appends the wire encoding of v (without tag) for fd's kind.
func appendScalar(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protowire.AppendVarint(b, protowire.EncodeBool(v.Bool()))
	case protoreflect.EnumKind:
		return protowire.AppendVarint(b, uint64(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Int64Kind:
		return protowire.AppendVarint(b, uint64(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		return protowire.AppendVarint(b, v.Uint())
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return protowire.AppendVarint(b, protowire.EncodeZigZag(v.Int()))
	case protoreflect.Fixed32Kind:
		return protowire.AppendFixed32(b, uint32(v.Uint()))
	case protoreflect.Sfixed32Kind:
		return protowire.AppendFixed32(b, uint32(v.Int()))
	case protoreflect.Fixed64Kind:
		return protowire.AppendFixed64(b, v.Uint())
	case protoreflect.Sfixed64Kind:
		return protowire.AppendFixed64(b, uint64(v.Int()))
	case protoreflect.FloatKind:
		return protowire.AppendFixed32(b, math.Float32bits(float32(v.Float())))
	case protoreflect.DoubleKind:
		return protowire.AppendFixed64(b, math.Float64bits(v.Float()))
	}
	panic("not a packable kind: " + fd.Kind().String())
}

func wireType(fd protoreflect.FieldDescriptor) protowire.Type {
	switch fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// TestVTPackedEitherWay: every repeated scalar field decodes whether the
// writer packed it or not (the wire format lets a decoder meet both; CRIU
// packs only where its .proto says so), to what protobuf-go decodes.
func TestVTPackedEitherWay(t *testing.T) {
	checked := 0
	for _, mt := range entryTypes(t) {
		md := mt.Descriptor()
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			if !fd.IsList() || fd.Message() != nil || fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind {
				continue
			}
			m := filled(t, mt, 1)
			list := m.ProtoReflect().Get(fd).List()
			base := proto.Clone(m)
			base.ProtoReflect().Clear(fd)
			b, err := proto.Marshal(base)
			if err != nil {
				t.Fatal(err)
			}
			unpacked := b
			for j := 0; j < list.Len(); j++ {
				unpacked = protowire.AppendTag(unpacked, fd.Number(), wireType(fd))
				unpacked = appendScalar(unpacked, fd, list.Get(j))
			}
			var payload []byte
			for j := 0; j < list.Len(); j++ {
				payload = appendScalar(payload, fd, list.Get(j))
			}
			packed := protowire.AppendTag(append([]byte(nil), b...), fd.Number(), protowire.BytesType)
			packed = protowire.AppendBytes(packed, payload)
			for name, enc := range map[string][]byte{"packed": packed, "unpacked": unpacked} {
				ref := mt.New().Interface()
				if err := proto.Unmarshal(enc, ref); err != nil {
					t.Fatalf("%s.%s %s: proto.Unmarshal: %v", md.FullName(), fd.Name(), name, err)
				}
				got := mt.New().Interface()
				if err := unmarshalEntry(enc, got); err != nil {
					t.Fatalf("%s.%s %s: UnmarshalVT: %v", md.FullName(), fd.Name(), name, err)
				}
				if !proto.Equal(got, ref) || !proto.Equal(got, m) {
					t.Errorf("%s.%s %s: UnmarshalVT gives %v, proto.Unmarshal %v, want %v", md.FullName(), fd.Name(), name, got, ref, m)
				}
				checked++
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d repeated scalar fields", checked/2)
	}
	t.Logf("%d repeated scalar fields decode packed and unpacked", checked/2)
}

// TestReaderRequiredFieldError: through the reader, a missing required
// field, at the top or nested, is a DecodeError naming the file, the type
// and the field.
func TestReaderRequiredFieldError(t *testing.T) {
	for field, m := range map[string]*pb.CoreEntry{
		"mtype":      {},
		"task_state": {Mtype: pb.CoreEntry_X86_64.Enum(), Tc: &pb.TaskCoreEntry{}},
	} {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, "core", Core)
		must(t, err)
		must(t, w.Close())
		b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
		must(t, err)
		img := append(buf.Bytes(), byte(len(b)), 0, 0, 0)
		img = append(img, b...)
		r, err := NewReader(bytes.NewReader(img), "core-1.img", Core, int64(len(img)), Limits{})
		must(t, err)
		_, err = r.ReadAll()
		var de *DecodeError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "core-1.img") || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), "core_entry") {
			t.Errorf("got %v, want a DecodeError naming the file, core_entry and %s", err, field)
		}
	}
}

// TestVTWrongWireType pins the one place where the generated decoder is
// stricter than protobuf-go (pb's doc.go): a known field with another wire
// type than its own is an error naming the field, not an unknown field.
func TestVTWrongWireType(t *testing.T) {
	b, err := proto.Marshal(&pb.FsEntry{CwdId: proto.Uint32(1), RootId: proto.Uint32(2)})
	must(t, err)
	b = protowire.AppendTag(b, 3, protowire.BytesType) // umask is a varint
	b = protowire.AppendBytes(b, []byte("xy"))
	if err := proto.Unmarshal(b, &pb.FsEntry{}); err != nil {
		t.Fatalf("proto.Unmarshal: %v (it keeps such a field as unknown)", err)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "fs", FS)
	must(t, err)
	must(t, w.Close())
	img := append(buf.Bytes(), byte(len(b)), 0, 0, 0)
	img = append(img, b...)
	r, err := NewReader(bytes.NewReader(img), "fs-1.img", FS, int64(len(img)), Limits{})
	must(t, err)
	_, err = r.ReadAll()
	var de *DecodeError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "fs-1.img") || !strings.Contains(err.Error(), "Umask") {
		t.Fatalf("got %v, want a DecodeError naming the file and the field", err)
	}
}
