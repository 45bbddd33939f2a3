package main

import (
	"os"
	"testing"
)

// TestMain removes the crtools binary that crtoolsBin built once for the
// whole run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
