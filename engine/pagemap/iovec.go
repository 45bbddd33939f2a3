package pagemap

import "golang.org/x/sys/unix"

// AdvanceRemote drops the first n bytes from remote, the remote side of a
// process_vm_readv or process_vm_writev that moved only n bytes: a short
// transfer stops at an iovec boundary or inside one, and the next call goes
// on from there. It returns the rest, whose first element it may shorten
// in place.
func AdvanceRemote(remote []unix.RemoteIovec, n int) []unix.RemoteIovec {
	for n > 0 && len(remote) > 0 {
		if n >= remote[0].Len {
			n -= remote[0].Len
			remote = remote[1:]
			continue
		}
		remote[0].Base += uintptr(n)
		remote[0].Len -= n
		n = 0
	}
	return remote
}
