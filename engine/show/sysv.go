package show

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/image/pb"
)

// SysV IPC objects of a dumped IPC namespace (ipcns-{shm,msg,sem}-ID.img,
// engine/ns/sysv.go).

// sysvSet are the SysV images of the directory, by namespace id.
type sysvSet struct {
	ns  uint64
	shm []*image.Entry
	msg []*image.Entry
	sem []*image.Entry
}

// loadSysV reads every ipcns-{shm,msg,sem} image of dir.
func loadSysV(dir string, names []string) ([]*sysvSet, error) {
	byNS := map[uint64]*sysvSet{}
	for _, n := range names {
		k, id, ok := image.KindByFilename(n)
		if !ok || (k != image.IPCShm && k != image.IPCMsg && k != image.IPCSem) {
			continue
		}
		es, err := image.ReadFile(dir, k, id)
		if err != nil {
			return nil, err
		}
		s := byNS[id]
		if s == nil {
			s = &sysvSet{ns: id}
			byNS[id] = s
		}
		switch k {
		case image.IPCShm:
			s.shm = es
		case image.IPCMsg:
			s.msg = es
		case image.IPCSem:
			s.sem = es
		}
	}
	var out []*sysvSet
	for _, s := range byNS {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ns < out[j].ns })
	return out, nil
}

// descText is an object's id, key, mode, owner and creator.
func descText(d *pb.IpcDescEntry) string {
	return fmt.Sprintf("%d key %#x mode %o owner %d:%d creator %d:%d", d.GetId(), d.GetKey(), d.GetMode(), d.GetUid(), d.GetGid(), d.GetCuid(), d.GetCgid())
}

// sysv summarises the SysV objects of each dumped IPC namespace.
func (s *imageSet) sysv(w *bufio.Writer) {
	for _, set := range s.sysvSets {
		fmt.Fprintf(w, "\nSysV IPC (ipc namespace %d)\n", set.ns)
		for _, e := range set.shm {
			m := e.Msg.(*pb.IpcShmEntry)
			where := "contents follow the entry"
			if m.GetInPagemaps() {
				where = "contents in " + image.ShmemPagemap.FileName(uint64(m.GetDesc().GetId()))
			}
			if m.GetDesc().GetMode()&0o1000 != 0 {
				where = "removed (IPC_RMID) while attached, " + where
			}
			fmt.Fprintf(w, "  shm %s: %d bytes, %s\n", descText(m.GetDesc()), m.GetSize(), where)
		}
		for _, e := range set.msg {
			m := e.Msg.(*pb.IpcMsgEntry)
			var bytes int
			for _, x := range e.Messages {
				bytes += len(x.Text)
			}
			fmt.Fprintf(w, "  msg %s: %d messages, %d of %d bytes\n", descText(m.GetDesc()), len(e.Messages), bytes, m.GetQbytes())
			for i, x := range e.Messages {
				fmt.Fprintf(w, "    [%d] type %d: %s\n", i, x.Msg.GetMtype(), msgText(x.Text))
			}
		}
		for _, e := range set.sem {
			m := e.Msg.(*pb.IpcSemEntry)
			fmt.Fprintf(w, "  sem %s: %d semaphores, values %s\n", descText(m.GetDesc()), m.GetNsems(), semText(m, e.Payload))
		}
	}
}

// msgText is a message's text: quoted if printable and short, else its size.
func msgText(b []byte) string {
	if printable(b) && len(b) <= 80 {
		return fmt.Sprintf("%d bytes %s", len(b), strconv.Quote(string(b)))
	}
	return fmt.Sprintf("%d bytes", len(b))
}

func semText(m *pb.IpcSemEntry, payload []byte) string {
	v, err := image.SemValues(m, payload)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(int(x))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// ipcText writes what follows a SysV entry in a single image's text
// dump, in place of the raw payload; false if e is not a SysV entry.
func ipcText(w *bufio.Writer, e *image.Entry) bool {
	switch m := e.Msg.(type) {
	case *pb.IpcShmEntry:
		if m.GetInPagemaps() {
			fmt.Fprintf(w, "  contents in %s\n", image.ShmemPagemap.FileName(uint64(m.GetDesc().GetId())))
			return true
		}
	case *pb.IpcMsgEntry:
		for i, x := range e.Messages {
			fmt.Fprintf(w, "  message[%d]: type %d, %s\n", i, x.Msg.GetMtype(), msgText(x.Text))
		}
		return true
	case *pb.IpcSemEntry:
		fmt.Fprintf(w, "  values: %s\n", semText(m, e.Payload))
		return true
	}
	return false
}

// ipcJSON adds the messages or values of a SysV entry to its JSON object;
// false if e is not such an entry.
func ipcJSON(o *object, e *image.Entry) bool {
	switch m := e.Msg.(type) {
	case *pb.IpcMsgEntry:
		var ms []any
		for _, x := range e.Messages {
			mo := jsonMessage(x.Msg.ProtoReflect())
			if printable(x.Text) {
				mo.add("text", string(x.Text))
			} else {
				mo.add("extra", base64.StdEncoding.EncodeToString(x.Text))
			}
			ms = append(ms, mo)
		}
		if ms == nil {
			ms = []any{}
		}
		o.add("messages", ms)
		return true
	case *pb.IpcSemEntry:
		v, err := image.SemValues(m, e.Payload)
		if err != nil {
			return false
		}
		o.add("values", v)
		return true
	}
	return false
}
