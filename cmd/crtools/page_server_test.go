package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/pageserver"
)

// startPageServer runs `crtools page-server` in-process and returns the
// address it printed and a channel with its exit code and stderr.
func startPageServer(t *testing.T, args ...string) (string, <-chan [2]string) {
	t.Helper()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan [2]string, 1)
	go func() {
		code := run(append([]string{"page-server"}, args...), pw, &stderr)
		pw.Close()
		done <- [2]string{string(rune('0' + code)), stderr.String()}
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	if err != nil {
		r := <-done
		t.Fatalf("page-server printed no address (exit %s): %s", r[0], r[1])
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "Listening on ")
	if !ok {
		t.Fatalf("first line %q, want Listening on ADDR", line)
	}
	return addr, done
}

func waitExit(t *testing.T, done <-chan [2]string) (string, string) {
	t.Helper()
	select {
	case r := <-done:
		return r[0], r[1]
	case <-time.After(30 * time.Second):
		t.Fatal("page-server did not exit")
		return "", ""
	}
}

func TestPageServerCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new") // created by page-server
	addr, done := startPageServer(t, "-D", dir, "--address", "127.0.0.1", "-v", "2")
	c, err := pageserver.Dial(context.Background(), addr, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	sink, err := c.CreatePages(image.Pagemap, 321)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("crtools!"), 3*image.PageSize/8)
	if err := sink.AddRun(0x7f0000001000, data, 3); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	if err := c.Close(); err != nil {
		t.Fatalf("client Close: %v", err)
	}
	code, stderr := waitExit(t, done)
	if code != "0" {
		t.Fatalf("page-server exit %s: %s", code, stderr)
	}
	if !strings.Contains(stderr, "pages stored") {
		t.Errorf("log lacks the final summary:\n%s", stderr)
	}
	pr, err := image.OpenPages(dir, image.Pagemap, 321)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	got, err := pr.ReadRun(0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored pages differ (%v)", err)
	}
}

func TestPageServerCommandBrokenSession(t *testing.T) {
	dir := t.TempDir()
	addr, done := startPageServer(t, "-D", dir, "--address", "127.0.0.1")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("SSH-2.0-OpenSSH_9.6p1 Debian-5\r\n\x00\x00\x00\x00\x00\x00\x00\x00"))
	code, stderr := waitExit(t, done)
	conn.Close()
	if code != "1" || !strings.Contains(stderr, "protocol error") {
		t.Fatalf("exit %s, stderr %q; want 1 and a protocol error", code, stderr)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d entries left in the images dir", len(ents))
	}
}

func TestPageServerCommandUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"page-server"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "-D") {
		t.Errorf("without -D: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"page-server", "-D", t.TempDir(), "--port", "70000"}, &out, &errb); code != exitUsage {
		t.Errorf("port 70000: exit %d, %q", code, errb.String())
	}
}
