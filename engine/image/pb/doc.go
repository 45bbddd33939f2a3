// Package pb holds the Go types generated from the CRIU-format image
// definitions in schemas/images. Do not edit the *.pb.go files; change the
// .proto files and run `go generate ./engine/image/pb` (needs protoc,
// protoc-gen-go v1.36.12 and protoc-gen-go-vtproto v0.6.0 in PATH:
// `go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.0`).
// The generated files are committed so that a build needs none of them.
//
// Besides protoc-gen-go's types, protoc-gen-go-vtproto generates for every
// type MarshalVT, MarshalToSizedBufferVT, SizeVT and UnmarshalVT
// (*_vtproto.pb.go): plain code with no reflection, which engine/image's
// reader and writer use. protobuf-go's proto.Marshal and proto.Unmarshal
// build a coder for each type by reflection on its first use: the first
// CoreEntry cost 1.4 ms, ten other types 1.7 ms, most of a single-process
// restore's load step (8.4 ms) and of a dump's write-images (5.3 ms). The
// generated code checks required fields as protobuf-go does (an error
// naming the missing field) and gives the same bytes; engine/image's tests
// compare the two on every entry type, the CRIU fixture and a fresh dump.
// Both store a number an enum does not list (protobuf-go treats proto2
// enums as open). One difference: a field this package knows, met with
// another wire type than its own (a uint32 field holding bytes, say),
// protobuf-go keeps among the unknown fields, the generated decoder
// refuses ("wrong wireType ... for field X", a DecodeError naming the
// file). Our .proto files give every field CRIU's type, so only a damaged
// or foreign image does that (TestVTWrongWireType).
//
// Registration on first use. protoc-gen-go registers every descriptor of
// every file in package initialisation (func init() { file_X_proto_init() }):
// every crtools run, even `crtools --version`, paid for all 57 files, about
// 2.6 ms and 93 page faults here, though dump and restore never need a
// descriptor once entries are encoded by the generated code above.
// internal/lazyreg, run by go generate after protoc, removes those init
// functions and makes every method that needs a descriptor (each message's
// ProtoReflect, each enum's Descriptor and Type: protojson, prototext,
// proto.Equal, String and the rest go through these) first register every
// file, once (register.go). It also moves the files' MessageInfo and
// EnumInfo tables from start-up allocations into zeroed arrays. Measured
// with `perf stat -r 60 crtools --version` (static build), alternating
// binaries: 464 page faults against 546 before (the package's init went
// from 5.5 ms and 419 allocations to 0.06 ms and 32 in GODEBUG=inittrace).
// What this changes for a user of the package: protoregistry.GlobalFiles
// and GlobalTypes, and the File_*_proto variables, know these files only
// after the first reflective use, or after Register. Registered says
// whether it happened: engine/image's tests check that reading and writing
// every kind of image does not register, and test/e2e that whole dumps and
// restores do not (the executor logs it at -v 2).
//
// Freshness without protoc: lazyreg last writes generated.sha256, the sums
// of every .proto file and of every file go generate wrote; TestGeneratedFresh
// recomputes them, so a .proto changed without `go generate` fails the tests
// even where protoc and its plugins are missing (CI has no plugins).
//
// Only engine/image should build entries from these types directly; the rest
// of crtools goes through that package.
package pb

//go:generate sh -c "protoc -I ../../../schemas/images --go_out=. --go_opt=paths=source_relative --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size ../../../schemas/images/*.proto"
//go:generate go run ./internal/lazyreg ../../../schemas/images
