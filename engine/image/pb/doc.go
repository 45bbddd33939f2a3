// Package pb holds the Go types generated from the CRIU-format image
// definitions in schemas/images. Do not edit the *.pb.go files; change the
// .proto files and run `go generate ./engine/image/pb` (needs protoc and
// protoc-gen-go in PATH). The generated files are committed so that a build
// needs neither.
//
// Only engine/image should build entries from these types directly; the rest
// of crtools goes through that package.
package pb

//go:generate sh -c "protoc -I ../../../schemas/images --go_out=. --go_opt=paths=source_relative ../../../schemas/images/*.proto"
