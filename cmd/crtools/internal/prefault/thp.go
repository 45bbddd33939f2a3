package prefault

// smallBuf holds what thpSetting and hugeTextOff read.
var smallBuf [4 << 10]byte

// thpAllowed reports whether this process may have 2 MiB transparent
// huge pages where it asks for them (MADV_HUGEPAGE): the process has not
// turned them off (PR_SET_THP_DISABLE, inherited across fork and exec),
// and the kernel's setting for that size is not "never". Since Linux 6.8
// each size has its own setting (hugepages-2048kB/enabled), which
// "inherit" hands to the system-wide one; before, only the system-wide
// one exists. The prefault tests ask this function too.
func thpAllowed() bool {
	if thpDisabled() {
		return false
	}
	switch thpSetting(openTHP(true)) {
	case "[never]":
		return false
	case "[always]", "[madvise]":
		return true
	}
	// "[inherit]", or no per-size file (before 6.8).
	s := thpSetting(openTHP(false))
	return s == "[always]" || s == "[madvise]"
}

// thpSetting reads a THP setting file, open as fd, closes it, and returns
// its bracketed choice ("always [madvise] never" gives "[madvise]"), or
// "" when fd is not open (no THP in the kernel, no such file) or holds
// none. The string lives in smallBuf until its next use.
func thpSetting(fd int) string {
	if fd < 0 {
		return ""
	}
	n := read(fd, smallBuf[:])
	closeFd(fd)
	if n <= 0 {
		return ""
	}
	s := bytesString(smallBuf[:n])
	for i := 0; i < len(s); i++ {
		if s[i] != '[' {
			continue
		}
		for j := i + 1; j < len(s); j++ {
			if s[j] == ']' {
				return s[i : j+1]
			}
		}
		break
	}
	return ""
}
