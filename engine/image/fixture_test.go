package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crtools/crtools/engine/image/pb"
)

const criuDir = "testdata/criu-4.2-tree"

// unknownFields lists the paths of fields in m that our .proto files do
// not define. For CRIU's own images there must be none: every field CRIU
// 4.2 writes has a name and a type here.
func unknownFields(m protoreflect.Message, path string) []string {
	var out []string
	if len(m.GetUnknown()) > 0 {
		out = append(out, path)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		p := path + "." + string(fd.Name())
		if fd.IsList() {
			for i := 0; i < v.List().Len(); i++ {
				out = append(out, unknownFields(v.List().Get(i).Message(), p)...)
			}
		} else {
			out = append(out, unknownFields(v.Message(), p)...)
		}
		return true
	})
	return out
}

// TestCRIUFixtureDecodesCompletely opens every image of the CRIU 4.2 set
// by its header alone and decodes all of it, payloads included.
func TestCRIUFixtureDecodesCompletely(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(criuDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, path := range names {
		base := filepath.Base(path)
		if strings.HasSuffix(base, ".md") || strings.HasSuffix(base, ".txt") {
			continue
		}
		t.Run(base, func(t *testing.T) {
			k, _, ok := KindByFilename(base)
			if !ok {
				t.Fatalf("no kind for file name %s", base)
			}
			r, err := OpenPath(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Kind() != k {
				t.Fatalf("header says %s, name says %s", r.Kind(), k)
			}
			if k.Header == HeaderNone {
				return
			}
			entries, err := r.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatal("no entries")
			}
			for i, e := range entries {
				if u := unknownFields(e.Msg.ProtoReflect(), string(e.Msg.ProtoReflect().Descriptor().Name())); len(u) > 0 {
					t.Errorf("entry %d has fields our .proto files lack: %v", i, u)
				}
			}
			seen++
		})
	}
	if seen < 20 {
		t.Fatalf("decoded only %d image files", seen)
	}
}

func readAll(t *testing.T, k *Kind, id uint64) []*Entry {
	t.Helper()
	es, err := ReadFile(criuDir, k, id)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestCRIUFixtureValues(t *testing.T) {
	t.Run("inventory", func(t *testing.T) {
		inv := &pb.InventoryEntry{}
		if err := ReadOne(criuDir, Inventory, 0, inv); err != nil {
			t.Fatal(err)
		}
		if inv.GetImgVersion() != 2 || !inv.GetFdinfoPerId() || inv.GetRootIds().GetTimeNsId() != 5 {
			t.Errorf("inventory: %v", inv)
		}
	})
	t.Run("pstree", func(t *testing.T) {
		es := readAll(t, Pstree, 0)
		if len(es) != 2 {
			t.Fatalf("%d pstree entries", len(es))
		}
		root, child := es[0].Msg.(*pb.PstreeEntry), es[1].Msg.(*pb.PstreeEntry)
		if root.GetPid() != 11215 || root.GetPpid() != 0 || root.GetPgid() != 11215 || root.GetSid() != 11215 {
			t.Errorf("root: %v", root)
		}
		if th := root.GetThreads(); len(th) != 2 || th[0] != 11215 || th[1] != 11217 {
			t.Errorf("root threads %v, want [11215 11217]", th)
		}
		if child.GetPid() != 11218 || child.GetPpid() != 11215 || len(child.GetThreads()) != 1 {
			t.Errorf("child: %v", child)
		}
	})
	t.Run("core", func(t *testing.T) {
		c := &pb.CoreEntry{}
		if err := ReadOne(criuDir, Core, 11215, c); err != nil {
			t.Fatal(err)
		}
		if c.GetMtype() != pb.CoreEntry_X86_64 || c.GetTc().GetComm() != "fixture" {
			t.Errorf("core: mtype %v comm %q", c.GetMtype(), c.GetTc().GetComm())
		}
		sa := c.GetTc().GetSigactions()
		if len(sa) < 10 {
			t.Fatalf("%d sigactions", len(sa))
		}
		// CRIU stores signals 1..64 without SIGKILL and SIGSTOP, so
		// SIGUSR1 (10) is at index 8. Its handler has SA_RESTART.
		if len(sa) != 62 {
			t.Errorf("%d sigactions, want 62", len(sa))
		}
		if usr1 := sa[8]; usr1.GetSigaction() == 0 || usr1.GetFlags()&0x10000000 == 0 {
			t.Errorf("SIGUSR1 action %v", usr1)
		}
		if g := c.GetThreadInfo().GetGpregs(); g.GetIp() == 0 || g.GetSp() == 0 || g.GetFsBase() == 0 {
			t.Errorf("gpregs %v", g)
		}
		if len(c.GetThreadInfo().GetFpregs().GetXsave().GetYmmhSpace()) != 64 {
			t.Errorf("ymmh has %d words", len(c.GetThreadInfo().GetFpregs().GetXsave().GetYmmhSpace()))
		}
		if c.GetThreadCore().GetRseqEntry().GetRseqAbiSize() != 32 {
			t.Errorf("rseq %v", c.GetThreadCore().GetRseqEntry())
		}
		th := &pb.CoreEntry{}
		if err := ReadOne(criuDir, Core, 11217, th); err != nil {
			t.Fatal(err)
		}
		if th.GetTc() != nil || th.GetThreadCore() == nil {
			t.Errorf("thread core has task part %v", th.GetTc() != nil)
		}
	})
	t.Run("files", func(t *testing.T) {
		files := map[uint32]*pb.FileEntry{}
		for _, e := range readAll(t, Files, 0) {
			f := e.Msg.(*pb.FileEntry)
			files[f.GetId()] = f
		}
		fds := map[uint32]*pb.FileEntry{}
		for _, e := range readAll(t, Fdinfo, 2) {
			fd := e.Msg.(*pb.FdinfoEntry)
			f, ok := files[fd.GetId()]
			if !ok {
				t.Fatalf("fd %d refers to missing file id %d", fd.GetFd(), fd.GetId())
			}
			if f.GetType() != fd.GetType() {
				t.Errorf("fd %d: fdinfo type %v, file type %v", fd.GetFd(), fd.GetType(), f.GetType())
			}
			fds[fd.GetFd()] = f
		}
		for fd := uint32(0); fd < 3; fd++ {
			if fds[fd].GetReg().GetName() != "/dev/null" {
				t.Errorf("fd %d: %v", fd, fds[fd])
			}
		}
		if r := fds[3].GetReg(); r.GetName() != "/srv/crfx/data.txt" || r.GetPos() != 7 || r.GetFlags()&3 != 2 || r.GetSize() != 16 {
			t.Errorf("fd 3: %v", r)
		}
		if r := fds[4].GetReg(); r.GetName() != "/srv/crfx/ghost.txt" || r.GetSize() != 15 {
			t.Errorf("fd 4: %v", r)
		}
		if fds[5].GetType() != pb.FdTypes_PIPE || fds[6].GetType() != pb.FdTypes_PIPE || fds[5].GetPipe().GetPipeId() != fds[6].GetPipe().GetPipeId() {
			t.Errorf("fds 5/6 are not the two ends of one pipe: %v %v", fds[5], fds[6])
		}
		a, b := fds[7].GetUsk(), fds[8].GetUsk()
		if a == nil || b == nil || a.GetPeer() != b.GetIno() || b.GetPeer() != a.GetIno() || a.GetType() != 1 {
			t.Errorf("fds 7/8 are not a stream socketpair: %v %v", a, b)
		}
		if e := fds[9].GetEfd(); e.GetCounter() != 5 || e.GetFlags()&0x800 == 0 {
			t.Errorf("eventfd: %v", e)
		}
		// The README says fd 10; CRIU's fdinfo says the timerfd is fd 11
		// (fd 10 is another /dev/null).
		if tf := fds[11].GetTfd(); tf.GetClockid() != 1 || tf.GetIsec() != 60 || tf.GetInsec() != 0 || tf.GetVsec() == 0 || tf.GetVsec() > 120 {
			t.Errorf("timerfd: %v", tf)
		}
	})
	t.Run("pipe-data", func(t *testing.T) {
		es := readAll(t, PipesData, 0)
		if len(es) != 1 || string(es[0].Payload) != "pipe data" {
			t.Fatalf("pipe data: %v", es)
		}
	})
	t.Run("sk-queues", func(t *testing.T) {
		es := readAll(t, SkQueues, 0)
		if len(es) != 1 || string(es[0].Payload) != "unix stream data" {
			t.Fatalf("queue: %v", es)
		}
	})
	t.Run("ghost", func(t *testing.T) {
		es := readAll(t, GhostFile, 1)
		if len(es) != 1 || string(es[0].Payload) != "ghost contents\n" {
			t.Fatalf("ghost: %v", es)
		}
		if g := es[0].Msg.(*pb.GhostFileEntry); g.GetMode() != 0o100600 {
			t.Errorf("ghost mode %o", g.GetMode())
		}
		rm := readAll(t, RemapFpath, 0)
		if r := rm[0].Msg.(*pb.RemapFilePathEntry); r.GetRemapType() != pb.RemapType_GHOST || r.GetOrigId() != 8 {
			t.Errorf("remap: %v", r)
		}
	})
	t.Run("memory", func(t *testing.T) {
		mm := &pb.MmEntry{}
		if err := ReadOne(criuDir, MM, 11215, mm); err != nil {
			t.Fatal(err)
		}
		pr, err := OpenPages(criuDir, Pagemap, 11215)
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		st, _ := pr.File().Stat()
		if pr.Index.PagesSize != st.Size() {
			t.Errorf("pagemap uses %d bytes of pages, file has %d", pr.Index.PagesSize, st.Size())
		}
		// The 1 MiB of 0x5a sits inside a larger merged anonymous VMA;
		// look for it in each contiguous stretch of saved pages.
		want := bytes.Repeat([]byte{0x5a}, 1<<20)
		found := false
		runs := pr.Index.Runs
		for i := 0; i < len(runs); {
			j := i + 1
			for j < len(runs) && runs[j].Vaddr == runs[j-1].End() {
				j++
			}
			buf := make([]byte, runs[j-1].End()-runs[i].Vaddr)
			if _, err := pr.ReadAt(buf, runs[i].Vaddr); err != nil {
				t.Fatal(err)
			}
			if k := bytes.Index(buf, want); k >= 0 && k%PageSize == 0 {
				found = true
				inVMA := false
				for _, v := range mm.GetVmas() {
					a := runs[i].Vaddr + uint64(k)
					inVMA = inVMA || (v.GetStart() <= a && a+1<<20 <= v.GetEnd() && v.GetFlags()&0x22 == 0x22)
				}
				if !inVMA {
					t.Error("the 0x5a region is not inside a private anonymous VMA")
				}
			}
			i = j
		}
		if !found {
			t.Error("no 1 MiB of 0x5a in the saved pages")
		}
		sh, err := OpenPages(criuDir, ShmemPagemap, 13637)
		if err != nil {
			t.Fatal(err)
		}
		defer sh.Close()
		b, err := sh.ReadRun(0)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("shared page\x00")) {
			t.Errorf("shared page holds %q", b[:16])
		}
	})
	t.Run("others", func(t *testing.T) {
		m := readAll(t, MemfdInode, 0)[0].Msg.(*pb.MemfdInodeEntry)
		if m.GetSize() != 4096 || m.GetShmid() != 13637 {
			t.Errorf("memfd inode %v", m)
		}
		tn := readAll(t, Timens, 0)[0].Msg.(*pb.TimensEntry)
		if tn.GetMonotonic() == nil || tn.GetBoottime() == nil {
			t.Errorf("timens %v", tn)
		}
		if sc := readAll(t, Seccomp, 0)[0].Msg.(*pb.SeccompEntry); len(sc.GetSeccompFilters()) != 0 {
			t.Errorf("seccomp %v", sc)
		}
		st := readAll(t, StatsDump, 0)[0].Msg.(*pb.StatsEntry)
		if st.GetDump().GetPagesWritten() == 0 {
			t.Errorf("stats %v", st)
		}
		fs := readAll(t, FS, 11215)[0].Msg.(*pb.FsEntry)
		if fs.GetCwdId() == 0 {
			t.Errorf("fs %v", fs)
		}
	})
}

// TestCRIUFixtureReencodes writes every decoded entry and payload back
// with Writer and checks that the result decodes to the same messages and
// that, where CRIU's encoder emits fields in number order (all but a few
// kinds), the bytes are identical.
func TestCRIUFixtureReencodes(t *testing.T) {
	names, _ := filepath.Glob(filepath.Join(criuDir, "*"))
	identical := 0
	for _, path := range names {
		k, _, ok := KindByFilename(path)
		if !ok || k.Header == HeaderNone {
			continue
		}
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(bytes.NewReader(orig), path, k, int64(len(orig)), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		es, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		w, err := NewWriter(&out, "buf", k)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if err := w.Write(e.Msg); err != nil {
				t.Fatal(err)
			}
			for _, c := range e.Chunks {
				if err := w.Write(c); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.WriteExtra(e.Payload); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r2, err := NewReader(bytes.NewReader(out.Bytes()), "buf", k, int64(out.Len()), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		es2, err := r2.ReadAll()
		if err != nil {
			t.Fatalf("%s: re-read: %v", path, err)
		}
		if len(es2) != len(es) {
			t.Fatalf("%s: %d entries, re-read %d", path, len(es), len(es2))
		}
		for i := range es {
			if !proto.Equal(es[i].Msg, es2[i].Msg) || !bytes.Equal(es[i].Payload, es2[i].Payload) {
				t.Errorf("%s: entry %d differs after re-encoding", path, i)
			}
		}
		if bytes.Equal(out.Bytes(), orig) {
			identical++
		}
	}
	t.Logf("%d image files re-encoded byte for byte", identical)
	if identical < 15 {
		t.Errorf("only %d files re-encode byte for byte", identical)
	}
}

var _ = io.EOF
