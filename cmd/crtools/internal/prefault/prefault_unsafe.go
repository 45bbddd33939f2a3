package prefault

import "unsafe"

// textAddr returns an address in crtools' own text: the code of this
// package's init, which is part of the binary whatever way it was built
// (static, dynamic, PIE).
func textAddr() uintptr {
	f := textAddr
	// A func value points to a closure whose first word is the code
	// address.
	return **(**uintptr)(unsafe.Pointer(&f))
}

// heapSink keeps the objects of smallFront, largeFront and heap on the
// heap.
var heapSink []byte

// smallFront returns the address of a fresh 8 KiB heap object: its span
// is one page, the next of the block this P caches (goPage).
func smallFront() uintptr {
	heapSink = make([]byte, goPage)
	p := sliceAddr(heapSink)
	heapSink = nil
	return p + goPage
}

// largeFront returns the address just past a fresh 128 KiB heap object,
// which takes 16 pages from the page allocator: its front (goPage).
func largeFront() uintptr {
	heapSink = make([]byte, 16*goPage)
	p := sliceAddr(heapSink)
	heapSink = nil
	return p + 16*goPage
}

// sliceAddr is the address of b's first byte.
func sliceAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// bytesString is b as a string, without a copy: the maps lines parsed
// from mapsBuf, which allocate nothing so (an allocation before the heap
// is populated faults on a fresh page). The strings are used before
// mapsBuf is read again.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
