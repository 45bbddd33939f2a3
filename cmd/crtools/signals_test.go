package main

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestJobSignals: once context returns, SIGTERM cancels it instead of
// killing the process.
func TestJobSignals(t *testing.T) {
	s := catchSignals()
	ctx := s.context()
	defer s.release()
	if ctx.Err() != nil {
		t.Fatalf("cancelled before any signal: %v", ctx.Err())
	}
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not cancel the job's context")
	}
}
