package ptrace

import "sync"

// syscallNumbers is the reverse of syscallNames, built on first use: only
// `crtools exec` looks names up.
var syscallNumbers = sync.OnceValue(func() map[string]int {
	m := make(map[string]int, len(syscallNames))
	for nr, name := range syscallNames {
		if name != "" {
			m[name] = nr
		}
	}
	return m
})

// SyscallNumber returns the x86-64 number of the syscall called name (as the
// kernel's syscall table spells it: "openat", "rt_sigaction", "newfstatat").
func SyscallNumber(name string) (int, bool) {
	nr, ok := syscallNumbers()[name]
	return nr, ok
}

// SyscallName returns the name of syscall nr, or "" if there is none.
func SyscallName(nr int) string {
	if nr < 0 || nr >= len(syscallNames) {
		return ""
	}
	return syscallNames[nr]
}
