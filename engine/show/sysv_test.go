package show

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// TestSysVImages: the SysV images of an IPC namespace, written by hand
// from the format, show with their objects' ids, keys (hex), modes,
// owners and creators, the messages of a queue in order with their types
// and texts, and a set's semaphore values, in the directory summary, in
// a single image's text and in JSON.
func TestSysVImages(t *testing.T) {
	dir := buildSet(t)
	u32 := proto.Uint32
	desc := func(id, key, mode, uid uint32) *pb.IpcDescEntry {
		return &pb.IpcDescEntry{Key: u32(key), Uid: u32(uid), Gid: u32(uid + 1), Cuid: u32(0), Cgid: u32(0), Mode: u32(mode), Id: u32(id)}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(image.WriteFile(dir, image.IPCShm, 9, &pb.IpcShmEntry{Desc: desc(65541, 0x5eed0001, 0o640, 7), Size: proto.Uint64(8202), InPagemaps: proto.Bool(true)}))
	w, err := image.Create(dir, image.IPCMsg, 9)
	must(err)
	must(w.Write(&pb.IpcMsgEntry{Desc: desc(98311, 0x5eed0003, 0o600, 0), Qbytes: u32(20000), Qnum: u32(2)}))
	must(w.Write(&pb.IpcMsg{Mtype: proto.Uint64(3), Msize: u32(5)}))
	must(w.WriteExtra([]byte("hello\x00\x00\x00")))
	must(w.Write(&pb.IpcMsg{Mtype: proto.Uint64(1), Msize: u32(0)}))
	must(w.Close())
	w, err = image.Create(dir, image.IPCSem, 9)
	must(err)
	must(w.Write(&pb.IpcSemEntry{Desc: desc(3, 0x5eed0004, 0o660, 0), Nsems: u32(3)}))
	must(w.WriteExtra([]byte{0, 0, 7, 0, 0xff, 0x7f, 0, 0}))
	must(w.Close())

	var out bytes.Buffer
	must(Dir(&out, dir))
	for _, want := range []string{
		"\nSysV IPC (ipc namespace 9)\n",
		"  shm 65541 key 0x5eed0001 mode 640 owner 7:8 creator 0:0: 8202 bytes, contents in pagemap-shmem-65541.img\n",
		"  msg 98311 key 0x5eed0003 mode 600 owner 0:1 creator 0:0: 2 messages, 5 of 20000 bytes\n" +
			"    [0] type 3: 5 bytes \"hello\"\n    [1] type 1: 0 bytes \"\"\n",
		"  sem 3 key 0x5eed0004 mode 660 owner 0:1 creator 0:0: 3 semaphores, values [0 7 32767]\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show -D lacks %q:\n%s", want, out.String())
		}
	}
	for _, c := range []struct {
		file string
		json bool
		want []string
	}{
		{"ipcns-msg-9.img", false, []string{"key: 0x5eed0003", "  message[0]: type 3, 5 bytes \"hello\"\n  message[1]: type 1, 0 bytes \"\"\n"}},
		{"ipcns-sem-9.img", false, []string{"  values: [0 7 32767]\n"}},
		{"ipcns-shm-9.img", false, []string{"  contents in pagemap-shmem-65541.img\n"}},
		{"ipcns-msg-9.img", true, []string{`"key": "0x5eed0003"`, `"mtype": 3,`, `"text": "hello"`}},
		{"ipcns-sem-9.img", true, []string{`"values": [`, `32767`}},
	} {
		out.Reset()
		must(File(&out, filepath.Join(dir, c.file), Options{JSON: c.json}))
		for _, want := range c.want {
			if !strings.Contains(out.String(), want) {
				t.Errorf("show -f %s (json %v) lacks %q:\n%s", c.file, c.json, want, out.String())
			}
		}
		if strings.Contains(out.String(), "payload") || strings.Contains(out.String(), "\"extra\"") {
			t.Errorf("show -f %s (json %v) prints the raw payload:\n%s", c.file, c.json, out.String())
		}
	}
}
