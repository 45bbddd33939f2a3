package files

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/crtools/crtools/engine/image/pb"
)

const pipeTestBytes = 200000

func init() {
	// A 1 MiB pipe with 200000 unread bytes, both ends, and a dup of the
	// read end (same open file description).
	helpers["pipe"] = func(string) ([]int, func() error) {
		p := mustPipe(0)
		if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
			panic(err)
		}
		if _, err := unix.Write(p[1], pattern(pipeTestBytes)); err != nil {
			panic(err)
		}
		dup, _ := unix.Dup(p[0])
		return []int{p[0], p[1], dup}, func() error {
			got, err := readAllNonblock(p[0])
			if err != nil {
				return err
			}
			return expectBytes("pipe content after dump", got, pattern(pipeTestBytes))
		}
	}
}

func TestPipeDataSavedWithoutConsumingAndRestored(t *testing.T) {
	h := startHelper(t, "pipe", "")
	d := newTestDumper(t, Options{})
	cs := dumpAll(t, d, h.Pid, h.Fds)
	r, w, dup := cs[0], cs[1], cs[2]
	if r.Kind != pb.FdTypes_PIPE || w.Kind != pb.FdTypes_PIPE {
		t.Fatalf("kinds %v %v", r.Kind, w.Kind)
	}
	if !dup.Shared || dup.ID != r.ID || dup.Entry != nil {
		t.Errorf("dup of the read end: shared=%v id=%d (read end %d)", dup.Shared, dup.ID, r.ID)
	}
	if r.ID == w.ID || r.Entry.GetPipe().GetPipeId() != w.Entry.GetPipe().GetPipeId() {
		t.Errorf("ends: ids %d/%d pipe ids %d/%d", r.ID, w.ID, r.Entry.GetPipe().GetPipeId(), w.Entry.GetPipe().GetPipeId())
	}
	if w.Entry.GetPipe().GetFlags()&unix.O_ACCMODE != unix.O_WRONLY {
		t.Errorf("write end flags %#o", w.Entry.GetPipe().GetFlags())
	}
	set := d.Set()
	pd := set.PipeData[r.Entry.GetPipe().GetPipeId()]
	if pd == nil {
		t.Fatal("no pipe data saved")
	}
	if err := expectBytes("saved pipe data", pd.Data, pattern(pipeTestBytes)); err != nil {
		t.Error(err)
	}
	if pd.Entry.GetSize() != 1<<20 || pd.Entry.GetBytes() != pipeTestBytes {
		t.Errorf("pipe data entry %v", pd.Entry)
	}
	h.check() // the workload still reads every byte

	rs := NewRestorer(roundTrip(t, set), d.log)
	defer rs.Close()
	rf, err := rs.Open(r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := rs.Open(w.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sz, _ := unix.FcntlInt(rf.Fd(), unix.F_GETPIPE_SZ, 0); sz != 1<<20 {
		t.Errorf("restored pipe size %d", sz)
	}
	if _, err := unix.Write(int(wf.Fd()), []byte("more")); err != nil {
		t.Fatal(err)
	}
	got, err := readAllNonblock(int(rf.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := expectBytes("restored pipe", got, append(pattern(pipeTestBytes), "more"...)); err != nil {
		t.Error(err)
	}
}

func init() {
	// Only the write end is held; the data must still be saved.
	helpers["pipe-write-end"] = func(string) ([]int, func() error) {
		p := mustPipe(0)
		unix.Write(p[1], []byte("written, never read"))
		keep := p[0]
		// Keep the read end under a high number the test does not dump.
		hi := 900
		unix.Dup3(keep, hi, 0)
		unix.Close(keep)
		return []int{p[1]}, func() error {
			got, _ := readAllNonblock(hi)
			return expectBytes("pipe", got, []byte("written, never read"))
		}
	}
}

func TestPipeWriteEndOnly(t *testing.T) {
	h := startHelper(t, "pipe-write-end", "")
	d := newTestDumper(t, Options{})
	c := dumpAll(t, d, h.Pid, h.Fds)[0]
	pd := d.Set().PipeData[c.Entry.GetPipe().GetPipeId()]
	if pd == nil || string(pd.Data) != "written, never read" {
		t.Fatalf("pipe data %+v", pd)
	}
	h.check()
	rs := NewRestorer(roundTrip(t, d.Set()), d.log)
	wf, err := rs.Open(c.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The restorer keeps the read end until Close; read it through /proc.
	rp := rs.pipes[c.Entry.GetPipe().GetPipeId()].r
	got, _ := readAllNonblock(int(rp.Fd()))
	if string(got) != "written, never read" {
		t.Errorf("restored pipe holds %q", got)
	}
	if _, err := unix.Write(int(wf.Fd()), []byte("!")); err != nil {
		t.Errorf("write to restored write end: %v", err)
	}
	rs.Close()
}
