package main

import (
	"context"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// jobSignals makes SIGINT and SIGTERM cancel a job's context (the executor
// then rolls back). Setting that up is slow on these VMs: os/signal
// enables each signal through a round trip to a thread of its own, which
// it creates first, and the same again to stop (1-3 ms in all). So it is
// set up on another goroutine while the command line is parsed and the
// job planned, and let go of without waiting.
type jobSignals struct {
	ready chan struct{}
	ctx   context.Context
	stop  context.CancelFunc
}

// catchSignals starts catching SIGINT and SIGTERM.
func catchSignals() *jobSignals {
	s := &jobSignals{ready: make(chan struct{})}
	go func() {
		s.ctx, s.stop = signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
		close(s.ready)
	}()
	return s
}

// context waits until the signals are caught and returns the context
// they cancel.
func (s *jobSignals) context() context.Context {
	<-s.ready
	return s.ctx
}

// release stops catching the signals, in the background: the process
// usually exits next, and a run in a test needs them back only eventually.
func (s *jobSignals) release() {
	go func() {
		<-s.ready
		s.stop()
	}()
}
