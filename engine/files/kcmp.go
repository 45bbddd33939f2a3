package files

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// kcmp(2) types (linux/kcmp.h).
const (
	KcmpFile    = 0
	KcmpVM      = 1
	KcmpFiles   = 2
	KcmpFS      = 3
	KcmpSighand = 4
)

// Kcmp is kcmp(2): 0 when the two objects are the same, 1 when pid1's
// sorts before pid2's, 2 when after.
func Kcmp(pid1, pid2, typ int, idx1, idx2 uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), idx1, idx2, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, os.NewSyscallError("kcmp", e)
		}
		return int(r), nil
	}
}

// KcmpIndex finds kernel objects of one kcmp type (open file
// descriptions, mms, fd tables, ...) among those seen before. kcmp orders
// objects as well as telling them apart (it compares their kernel
// addresses, obfuscated by a per-type cookie: a total order that holds
// for the whole boot), so the seen objects are kept sorted and a lookup is
// a binary search: log2(n) kcmp calls where comparing with every object
// seen would take n (with 50 tasks sharing /dev/null, thousands of calls).
type KcmpIndex struct {
	Type  int
	items []kcmpItem // sorted by kernel object
}

type kcmpItem struct {
	pid int
	idx uintptr
	id  uint32
}

// Find returns the id of the object behind (pid, idx) (idx is the fd for
// KcmpFile, else 0) if one seen before is the same, else records it under
// newID() and returns that with found false.
func (k *KcmpIndex) Find(pid int, idx uintptr, newID func() uint32) (id uint32, found bool, err error) {
	var cerr error
	// The last index the search found true, and kcmp's answer there: the
	// index it returns (a search narrows onto it), not to ask twice.
	lastI, lastR := -1, 0
	i := sort.Search(len(k.items), func(i int) bool {
		if cerr != nil {
			return true
		}
		o := k.items[i]
		r, err := Kcmp(pid, o.pid, k.Type, idx, o.idx)
		if err != nil {
			cerr = fmt.Errorf("compare with pid %d (%d): %w", o.pid, o.idx, err)
			return true
		}
		if r > 2 {
			cerr = fmt.Errorf("compare with pid %d (%d): kcmp gave no order (%d)", o.pid, o.idx, r)
			return true
		}
		// First item not less than ours: the same (0) or greater (1:
		// ours sorts before it).
		if r == 0 || r == 1 {
			lastI, lastR = i, r
			return true
		}
		return false
	})
	if cerr != nil {
		return 0, false, cerr
	}
	if i < len(k.items) {
		o := k.items[i]
		r := lastR
		if lastI != i {
			if r, err = Kcmp(pid, o.pid, k.Type, idx, o.idx); err != nil {
				return 0, false, fmt.Errorf("compare with pid %d (%d): %w", o.pid, o.idx, err)
			}
		}
		if r == 0 {
			return o.id, true, nil
		}
	}
	id = newID()
	k.items = append(k.items, kcmpItem{})
	copy(k.items[i+1:], k.items[i:])
	k.items[i] = kcmpItem{pid: pid, idx: idx, id: id}
	return id, false, nil
}

// Len is the number of distinct objects recorded.
func (k *KcmpIndex) Len() int { return len(k.items) }
