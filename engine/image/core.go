package image

// task_core_entry.sigactions holds one entry per signal 1..64 except
// SIGKILL (9) and SIGSTOP (19), whose actions cannot change: 62 entries,
// in signal order (CRIU 4.2 writes them so; see the fixture test).
const NumSigactions = 62

// SigactionIndex is the index in task_core_entry.sigactions of signal sig,
// or false for SIGKILL, SIGSTOP and numbers outside 1..64.
func SigactionIndex(sig int) (int, bool) {
	switch {
	case sig < 1 || sig > 64 || sig == 9 || sig == 19:
		return 0, false
	case sig < 9:
		return sig - 1, true
	case sig < 19:
		return sig - 2, true
	default:
		return sig - 3, true
	}
}

// SigactionSignal is the signal of index i of task_core_entry.sigactions.
func SigactionSignal(i int) int {
	sig := i + 1
	if sig >= 9 {
		sig++
	}
	if sig >= 19 {
		sig++
	}
	return sig
}
