package proc

import "testing"

// The parsers read files whose contents a hostile task partly controls
// (comm, paths): they must never panic, whatever the bytes.

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine("(a) b)")))
	f.Add([]byte("1 () S"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseStat(b) })
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte("1000-2000 rw-p 00000000 00:00 0    [heap]\nVmFlags: rd wr\nRss: 4 kB\n"))
	f.Add([]byte("1000-2000 r--s 00001000 fd:01 12 /a\\012b (deleted)\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseMaps(b) })
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Name:\tx\nTgid:\t1\nPid:\t1\nPPid:\t0\nTracerPid:\t0\nUid:\t0 0 0 0\nGid:\t0 0 0 0\nSigBlk:\t0\nSigIgn:\t0\nSigCgt:\t0\nCapEff:\t0\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseStatus(b) })
}

func FuzzParseTimersFdInfo(f *testing.F) {
	f.Add([]byte("ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.1\nClockID: 1\n"))
	f.Add([]byte("pos:\t0\nflags:\t02\nmnt_id:\t1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseTimers(b)
		_, _ = ParseFdInfo(b)
		_, _ = ParseAuxv(b)
		_, _ = ParseChildren(b)
	})
}
