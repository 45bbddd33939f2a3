// Command gowork is the Go workload of crtools' end-to-end tests: a Go
// program (no cgo) with goroutines, timers, a big map and a garbage
// collector kept busy, speaking the harness protocol of test/harness
// (CRT_READY, CRT_RESULT, CRT_STARTS; SIGUSR1 verify, SIGUSR2 verify and
// exit). Restoring it exercises what a Go program needs: every runtime
// thread, the SIGURG preemption signal, futexes, timers.
//
// Verify checks the map's contents, that every worker goroutine, the
// ticker and the timer chain moved on, that the GC ran again, and that
// the PID and the start token are what they were.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	workers  = 8
	mapSize  = 200_000
	waitStep = 5 * time.Millisecond
)

type state struct {
	pid      int
	token    uint64
	big      map[int]string
	sum      uint64 // checksum of big at start
	counts   [workers]atomic.Uint64
	ticks    atomic.Uint64
	timers   atomic.Uint64
	last     uint64 // progress at the previous report
	reports  int
	sink     atomic.Pointer[[]byte]
	failures []string
}

func value(i int) string { return fmt.Sprintf("v%07d-%x", i, i*2654435761) }

func checksum(m map[int]string) uint64 {
	var s uint64
	for k, v := range m {
		s += uint64(k) * uint64(len(v))
		for i := 0; i < len(v); i++ {
			s += uint64(v[i]) << (i % 8)
		}
	}
	return s
}

func (s *state) check(ok bool, format string, args ...any) {
	if !ok {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

func (s *state) progress() uint64 {
	var p uint64
	for i := range s.counts {
		p += s.counts[i].Load()
	}
	return p
}

func (s *state) verify() {
	var before [workers]uint64
	for i := range s.counts {
		before[i] = s.counts[i].Load()
	}
	ticks, timers := s.ticks.Load(), s.timers.Load()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcs := ms.NumGC

	s.check(os.Getpid() == s.pid, "pid %d, was %d at start", os.Getpid(), s.pid)
	s.check(len(s.big) == mapSize, "map has %d entries, want %d", len(s.big), mapSize)
	for _, k := range []int{0, 1, mapSize / 2, mapSize - 1} {
		s.check(s.big[k] == value(k), "map[%d] = %q, want %q", k, s.big[k], value(k))
	}
	s.check(checksum(s.big) == s.sum, "map checksum changed")

	deadline := time.Now().Add(3 * time.Second)
	for {
		moved := s.ticks.Load() > ticks && s.timers.Load() > timers
		for i := range s.counts {
			moved = moved && s.counts[i].Load() > before[i]
		}
		runtime.ReadMemStats(&ms)
		moved = moved && ms.NumGC > gcs
		if moved || time.Now().After(deadline) {
			break
		}
		time.Sleep(waitStep)
	}
	for i := range s.counts {
		s.check(s.counts[i].Load() > before[i], "worker %d stuck at %d", i, before[i])
	}
	s.check(s.ticks.Load() > ticks, "ticker stuck at %d", ticks)
	s.check(s.timers.Load() > timers, "timer chain stuck at %d", timers)
	s.check(ms.NumGC > gcs, "no garbage collection within 3 s (NumGC %d)", gcs)
	p := s.progress()
	// The first verify may come before any work was done.
	s.check(s.reports == 0 || p > s.last, "no progress since the previous verify (%d)", p)
	s.last = p
	s.reports++
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fmt.Fprintf(os.Stderr, "workload setup failed: environment variable %s is not set\n", name)
		os.Exit(2)
	}
	return v
}

func main() {
	readyPath, resultPath, startsPath := env("CRT_READY"), env("CRT_RESULT"), env("CRT_STARTS")
	s := &state{pid: os.Getpid(), big: make(map[int]string, mapSize)}
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		fmt.Fprintf(os.Stderr, "workload setup failed: random token: %v\n", err)
		os.Exit(2)
	}
	s.token = binary.LittleEndian.Uint64(tok[:])
	f, err := os.OpenFile(startsPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "workload setup failed: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(f, "%d %016x\n", s.pid, s.token)
	f.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)

	for i := 0; i < mapSize; i++ {
		s.big[i] = value(i)
	}
	s.sum = checksum(s.big)

	for i := 0; i < workers; i++ {
		go func(i int) {
			for {
				// Garbage, so that the collector keeps running.
				b := make([]byte, 16<<10)
				b[i] = byte(i)
				s.sink.Store(&b)
				s.counts[i].Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}(i)
	}
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		for range t.C {
			s.ticks.Add(1)
		}
	}()
	var chain func()
	chain = func() {
		s.timers.Add(1)
		time.AfterFunc(15*time.Millisecond, chain)
	}
	time.AfterFunc(15*time.Millisecond, chain)

	if err := writeAtomic(readyPath, fmt.Sprintf("%d\n", s.pid)); err != nil {
		fmt.Fprintf(os.Stderr, "workload setup failed: ready marker: %v\n", err)
		os.Exit(2)
	}
	for sig := range sigs {
		s.failures = nil
		s.verify()
		var line string
		if len(s.failures) > 0 {
			line = "FAIL " + strings.Join(s.failures, "; ") + "\n"
		} else {
			line = fmt.Sprintf("PASS token=%016x progress=%d\n", s.token, s.last)
		}
		if err := writeAtomic(resultPath, line); err != nil {
			fmt.Fprintf(os.Stderr, "write result %s: %v\n", filepath.Base(resultPath), err)
		}
		if sig == syscall.SIGUSR2 {
			if len(s.failures) > 0 {
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
}
