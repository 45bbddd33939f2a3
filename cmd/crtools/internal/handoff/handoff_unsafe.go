//go:build linux && amd64

package handoff

import "unsafe"

// holderStack is the holder's stack: it makes no call, and only reads
// into the bytes below the top.
var holderStack [256]byte

// allSignals blocks every signal (SIGKILL and SIGSTOP stay deliverable).
var allSignals = ^uint64(0)

// spawnHolder is in holder_linux_amd64.s.
func spawnHolder(stackTop uintptr, rfd int, set, old unsafe.Pointer) int

// spawn starts the holder, waiting on rfd, and returns its PID, or a
// negative errno.
func spawn(rfd int) int {
	var old uint64
	top := uintptr(unsafe.Pointer(&holderStack[len(holderStack)-1])) &^ 15
	return spawnHolder(top, rfd, unsafe.Pointer(&allSignals), unsafe.Pointer(&old))
}
