package pb

import (
	"sync"
	"sync/atomic"
)

// Registration of the descriptors on first reflective use; why in doc.go.
// The generated ProtoReflect methods of every message and the Descriptor
// and Type methods of every enum call lazyRegister first (put there by
// internal/lazyreg at go generate).
var (
	registered atomic.Bool
	registerMu sync.Mutex
)

func lazyRegister() {
	if !registered.Load() {
		registerSlow()
	}
}

func registerSlow() {
	registerMu.Lock()
	defer registerMu.Unlock()
	if registered.Load() {
		return
	}
	initFiles()
	registered.Store(true)
}

// Register registers the descriptors of every type of this package with
// protobuf-go (protoregistry.GlobalFiles and GlobalTypes) and fills the
// File_*_proto variables. Using a type reflectively (ProtoReflect,
// proto.Equal, protojson, String, ...) does it by itself; call Register
// before looking one of this package's types or files up by name.
func Register() { lazyRegister() }

// Registered reports whether the descriptors have been registered (for
// tests: the dump and restore paths must not need them).
func Registered() bool { return registered.Load() }
