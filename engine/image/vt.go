package image

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image/pb"
)

// vtMessage is what protoc-gen-go-vtproto adds to every type of package
// pb: encoding and decoding code generated for the type, without
// protobuf-go's reflection. proto.Marshal and proto.Unmarshal build a
// coder for each message type on its first use (1.4 ms for a CoreEntry,
// 1.7 ms for ten other types on this host) and need every descriptor of
// package pb registered: most of a single-process dump's write-images and
// of a restore's load step. The generated code gives the same bytes (a
// test in engine/image checks it on every image of the fixtures and of a
// fresh dump) and the same errors for missing required fields.
type vtMessage interface {
	proto.Message
	Reset()
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// appendEntry appends the 4-byte little-endian size of msg's encoding and
// the encoding to b. A missing required field is an error. msg is one of
// the kinds' entry types (Writer.Write takes no other), each of which has
// the generated encoder (TestVTMatchesReflectionEveryType).
func appendEntry(b []byte, msg proto.Message) ([]byte, error) {
	vm, ok := msg.(vtMessage)
	if !ok {
		return b, fmt.Errorf("a %T has no generated encoder", msg)
	}
	size := vm.SizeVT()
	start := len(b)
	b = slices.Grow(b, 4+size)[:start+4+size]
	n, err := vm.MarshalToSizedBufferVT(b[start+4:])
	if err != nil {
		return b[:start], err
	}
	if n != size {
		return b[:start], fmt.Errorf("encoded %d bytes, sized %d", n, size)
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(size))
	return b, nil
}

// unmarshalEntry decodes b into msg, replacing what msg held (as
// proto.Unmarshal does). A missing required field is an error naming it.
func unmarshalEntry(b []byte, msg proto.Message) error {
	vm, ok := msg.(vtMessage)
	if !ok {
		return proto.Unmarshal(b, msg)
	}
	vm.Reset()
	return vm.UnmarshalVT(b)
}

// ProtobufRegistered reports whether package pb's descriptors have been
// registered, which only reflective use of its types does (pb's doc.go):
// dump and restore must not need it.
func ProtobufRegistered() bool { return pb.Registered() }
