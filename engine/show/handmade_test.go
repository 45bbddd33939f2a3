package show

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// buildSet writes a small image set by hand, from the format alone: a
// parent with a zombie child, one VMA of three pages of which two are
// saved, a regular file, a pipe with queued data and a unix socket.
func buildSet(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	u32, u64 := proto.Uint32, proto.Uint64
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := &pb.TaskKobjIdsEntry{VmId: u32(1), FilesId: u32(1), FsId: u32(1), SighandId: u32(1)}
	must(image.WriteFile(dir, image.Inventory, 0, &pb.InventoryEntry{ImgVersion: u32(2), FdinfoPerId: proto.Bool(true), RootIds: ids}))
	must(image.WriteFile(dir, image.Pstree, 0,
		&pb.PstreeEntry{Pid: u32(100), Ppid: u32(0), Pgid: u32(100), Sid: u32(100), Threads: []uint32{100, 101}},
		&pb.PstreeEntry{Pid: u32(102), Ppid: u32(100), Pgid: u32(102), Sid: u32(100), Threads: []uint32{102}}))
	core := func(state, exit uint32, comm string) *pb.CoreEntry {
		return &pb.CoreEntry{Mtype: pb.CoreEntry_X86_64.Enum(),
			Tc:         &pb.TaskCoreEntry{TaskState: u32(state), ExitCode: u32(exit), Personality: u32(0), Flags: u32(0), BlkSigset: u64(0), Comm: proto.String(comm)},
			ThreadCore: &pb.ThreadCoreEntry{FutexRla: u64(0), FutexRlaLen: u32(0), Comm: proto.String(comm)}}
	}
	must(image.WriteFile(dir, image.Core, 100, core(1, 0, "parent")))
	must(image.WriteFile(dir, image.Core, 101, &pb.CoreEntry{Mtype: pb.CoreEntry_X86_64.Enum(),
		ThreadCore: &pb.ThreadCoreEntry{FutexRla: u64(0), FutexRlaLen: u32(0), Comm: proto.String("worker")}}))
	must(image.WriteFile(dir, image.Core, 102, core(2, 7, "zombie")))
	must(image.WriteFile(dir, image.IDs, 100, ids))
	must(image.WriteFile(dir, image.FS, 100, &pb.FsEntry{CwdId: u32(1), RootId: u32(1)}))
	vma := &pb.VmaEntry{Start: u64(0x10000), End: u64(0x13000), Pgoff: u64(0), Shmid: u64(0), Prot: u32(3), Flags: u32(0x22),
		Status: u32(image.VMAAreaRegular | image.VMAAnonPrivate), Fd: proto.Int64(-1)}
	mm := &pb.MmEntry{ExeFileId: u32(2), Vmas: []*pb.VmaEntry{vma}}
	for _, p := range []**uint64{&mm.MmStartCode, &mm.MmEndCode, &mm.MmStartData, &mm.MmEndData, &mm.MmStartStack,
		&mm.MmStartBrk, &mm.MmBrk, &mm.MmArgStart, &mm.MmArgEnd, &mm.MmEnvStart, &mm.MmEnvEnd} {
		*p = u64(0x10000)
	}
	must(image.WriteFile(dir, image.MM, 100, mm))
	pw, err := image.CreatePages(dir, image.Pagemap, 100, 1)
	must(err)
	must(pw.AddRun(0x10000, bytes.Repeat([]byte("hand-made page. "), 256), 1))
	must(pw.AddRun(0x12000, bytes.Repeat([]byte{0xab}, image.PageSize), 1))
	must(pw.Close())
	fown := &pb.FownEntry{Uid: u32(0), Euid: u32(0), Signum: u32(0), PidType: u32(0), Pid: u32(0)}
	must(image.WriteFile(dir, image.Files, 0,
		&pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Id: u32(1), Reg: &pb.RegFileEntry{Id: u32(1), Flags: u32(0), Pos: u64(0), Fown: fown, Name: proto.String("/")}},
		&pb.FileEntry{Type: pb.FdTypes_REG.Enum(), Id: u32(3), Reg: &pb.RegFileEntry{Id: u32(3), Flags: u32(0o2002), Pos: u64(42), Fown: fown, Name: proto.String("/tmp/a file\nwith newline")}},
		&pb.FileEntry{Type: pb.FdTypes_PIPE.Enum(), Id: u32(4), Pipe: &pb.PipeEntry{Id: u32(4), PipeId: u32(77), Flags: u32(0), Fown: fown}}))
	must(image.WriteFile(dir, image.Fdinfo, 1,
		&pb.FdinfoEntry{Id: u32(3), Flags: u32(1), Type: pb.FdTypes_REG.Enum(), Fd: u32(3)},
		&pb.FdinfoEntry{Id: u32(4), Flags: u32(0), Type: pb.FdTypes_PIPE.Enum(), Fd: u32(0)}))
	w, err := image.Create(dir, image.PipesData, 0)
	must(err)
	must(w.Write(&pb.PipeDataEntry{PipeId: u32(77), Bytes: u32(5)}))
	must(w.WriteExtra([]byte("hello")))
	must(w.Close())
	return dir
}

func TestHandmadeSet(t *testing.T) {
	dir := buildSet(t)
	var out bytes.Buffer
	if err := Dir(&out, dir); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"100      0        100      100      alive   parent           100,101(worker)",
		"102    100      102      100      dead(7) zombie",
		"100           1     12.0 KiB            2      8.0 KiB  pages-1.img",
		"102      (no memory image)",
		`0    PIPE      pipe:[77] (O_RDONLY, 5 bytes queued)`,
		`3    REG       "/tmp/a file\nwith newline" (O_RDWR|O_APPEND, pos 42) cloexec`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	if err := File(&out, image.Pagemap.Path(dir, 100), Options{Pages: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"000000010000: 6861 6e64 2d6d 6164 6520 7061 6765 2e20  hand-made page. ", "000000012000: abab", "flags: 0x4 (PRESENT)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("pagemap dump lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := File(&out, image.MM.Path(dir, 100), Options{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "status: 0x201 (REGULAR|ANON_PRIVATE)") || !strings.Contains(out.String(), "flags: 0x22 (PRIVATE|ANONYMOUS)") {
		t.Errorf("mm:\n%s", out.String())
	}
}
