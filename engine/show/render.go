package show

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crtools/crtools/engine/image"
)

// Options say how to render.
type Options struct {
	// Pages adds a hex dump of page contents (-c): for a pagemap, the
	// pages of each run from the pages file next to it; for a pages file,
	// the whole file.
	Pages bool
	// JSON prints crit-style JSON instead of text.
	JSON bool
}

// File renders the image file at path. The whole file is decoded before
// anything is printed, so a damaged file gives one error (naming the file)
// and no partial output.
func File(w io.Writer, path string, opts Options) error {
	r, err := image.OpenPath(path, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	k := r.Kind()
	bw := bufio.NewWriterSize(w, 64<<10)
	if k.Header == image.HeaderNone {
		if err := rawPages(bw, r, path, opts); err != nil {
			return err
		}
		return bw.Flush()
	}
	entries, err := r.ReadAll()
	if err != nil {
		return err
	}
	var pages *image.PagesReader
	if opts.Pages && (k == image.Pagemap || k == image.ShmemPagemap) {
		if pages, err = openPagesFor(path, k); err != nil {
			return err
		}
		defer pages.Close()
	}
	if opts.JSON {
		err = writeJSON(bw, k, entries)
	} else {
		err = writeText(bw, path, k, entries, pages)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

func openPagesFor(path string, k *image.Kind) (*image.PagesReader, error) {
	_, id, ok := image.KindByFilename(path)
	if !ok {
		return nil, fmt.Errorf("show pages of %s: cannot tell the id from the file name", path)
	}
	return image.OpenPages(filepath.Dir(path), k, id)
}

func rawPages(w *bufio.Writer, r *image.Reader, path string, opts Options) error {
	data, err := r.ReadRest()
	if err != nil {
		return err
	}
	if opts.JSON {
		b, _ := json.MarshalIndent(map[string]any{"magic": "PAGES", "size": len(data)}, "", "  ")
		w.Write(b)
		w.WriteString("\n")
		return nil
	}
	fmt.Fprintf(w, "%s: raw page data, %d bytes (%d pages)\n", filepath.Base(path), len(data), len(data)/image.PageSize)
	if opts.Pages {
		hexDump(w, data, 0, "  ")
	} else {
		fmt.Fprintf(w, "  (use -c to dump the contents, or show the pagemap that refers to it)\n")
	}
	return nil
}

func writeText(w *bufio.Writer, path string, k *image.Kind, entries []*image.Entry, pages *image.PagesReader) error {
	fmt.Fprintf(w, "%s: %s, %d entries\n", filepath.Base(path), k.Name, len(entries))
	run := 0
	for i, e := range entries {
		fmt.Fprintf(w, "[%d] %s\n", i, e.Msg.ProtoReflect().Descriptor().Name())
		textMessage(w, e.Msg.ProtoReflect(), "  ")
		for j, c := range e.Chunks {
			fmt.Fprintf(w, "  chunk[%d]: off %d len %d\n", j, c.GetOff(), c.GetLen())
		}
		if !ipcText(w, e) && e.Payload != nil {
			textPayload(w, e.Payload, "  ")
		}
		if pages != nil && i > 0 {
			if run < len(pages.Index.Runs) {
				pr := pages.Index.Runs[run]
				if pr.Offset >= 0 {
					data, err := pages.ReadRun(run)
					if err != nil {
						return err
					}
					fmt.Fprintf(w, "  pages at offset %#x of %s:\n", pr.Offset, filepath.Base(pages.File().Name()))
					hexDump(w, data, pr.Vaddr, "    ")
				} else {
					fmt.Fprintf(w, "  (pages not in this image)\n")
				}
			}
			run++
		}
	}
	return nil
}

func textPayload(w *bufio.Writer, p []byte, indent string) {
	fmt.Fprintf(w, "%spayload: %d bytes", indent, len(p))
	if printable(p) && len(p) <= 256 {
		fmt.Fprintf(w, " %s\n", strconv.Quote(string(p)))
		return
	}
	w.WriteString("\n")
	show := p
	if len(show) > 4096 {
		show = show[:4096]
	}
	hexDump(w, show, 0, indent+"  ")
	if len(show) < len(p) {
		fmt.Fprintf(w, "%s  ... %d more bytes\n", indent, len(p)-len(show))
	}
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

// fields returns the set fields of m in field-number order.
func fields(m protoreflect.Message) []protoreflect.FieldDescriptor {
	fds := m.Descriptor().Fields()
	var out []protoreflect.FieldDescriptor
	for i := 0; i < fds.Len(); i++ {
		if fd := fds.Get(i); m.Has(fd) {
			out = append(out, fd)
		}
	}
	// Declaration order is number order in our .proto files except in
	// core_entry; sort to be safe (a handful of fields).
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Number() < out[j-1].Number(); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func textMessage(w *bufio.Writer, m protoreflect.Message, indent string) {
	for _, fd := range fields(m) {
		name := string(fd.Name())
		v := m.Get(fd)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if fd.FullName() == "crtools.images.task_core_entry.sigactions" {
					fmt.Fprintf(w, "%s%s[%d]: %s\n", indent, name, i, signalName(image.SigactionSignal(i)))
					textMessage(w, l.Get(i).Message(), indent+"  ")
					continue
				}
				fmt.Fprintf(w, "%s%s[%d]:\n", indent, name, i)
				textMessage(w, l.Get(i).Message(), indent+"  ")
			}
		case fd.IsList():
			l := v.List()
			vals := make([]string, l.Len())
			for i := range vals {
				vals[i] = textScalar(fd, l.Get(i), false)
			}
			fmt.Fprintf(w, "%s%s: [%s]\n", indent, name, runLength(vals))
		case fd.Kind() == protoreflect.MessageKind:
			fmt.Fprintf(w, "%s%s:\n", indent, name)
			textMessage(w, v.Message(), indent+"  ")
		default:
			fmt.Fprintf(w, "%s%s: %s\n", indent, name, textScalar(fd, v, true))
		}
	}
	if u := m.GetUnknown(); len(u) > 0 {
		fmt.Fprintf(w, "%s(%d bytes of fields unknown to crtools)\n", indent, len(u))
	}
}

// runLength joins values, writing a run of equal values as "v ×n".
func runLength(vals []string) string {
	var parts []string
	for i := 0; i < len(vals); {
		j := i + 1
		for j < len(vals) && vals[j] == vals[i] {
			j++
		}
		if j-i > 3 {
			parts = append(parts, fmt.Sprintf("%s ×%d", vals[i], j-i))
		} else {
			for k := i; k < j; k++ {
				parts = append(parts, vals[k])
			}
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

func textScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value, decode bool) string {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.Itoa(int(v.Enum()))
	case protoreflect.StringKind:
		return strconv.Quote(v.String())
	case protoreflect.BytesKind:
		b := v.Bytes()
		if printable(b) {
			return strconv.Quote(string(b))
		}
		s := fmt.Sprintf("<% x>", b[:min(len(b), 32)])
		if len(b) > 32 {
			s += fmt.Sprintf(" (%d bytes)", len(b))
		}
		return s
	}
	if decode && isMode(fd) {
		return "0" + strconv.FormatUint(v.Uint(), 8)
	}
	if isHex(fd) {
		u := v.Uint()
		s := "0x" + strconv.FormatUint(u, 16)
		if decode {
			if n := flagNames(fd, u); n != "" {
				s += " (" + n + ")"
			}
		}
		return s
	}
	return v.String()
}

var signalNames = [...]string{1: "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS",
	"SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT",
	"SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ",
	"SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS"}

func signalName(sig int) string {
	if sig > 0 && sig < len(signalNames) {
		return signalNames[sig]
	}
	return fmt.Sprintf("SIGRTMIN+%d", sig-32) // the kernel's SIGRTMIN is 32
}

func hex64(v uint64) string { return fmt.Sprintf("%016x", v) }

// hexDump writes data like xxd, 16 bytes a line, with the address column
// starting at base; runs of identical lines are shown once followed by a
// "*" line, as hexdump does.
func hexDump(w *bufio.Writer, data []byte, base uint64, indent string) {
	var prev []byte
	skipping := false
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		if prev != nil && len(line) == 16 && string(line) == string(prev) && off+16 < len(data) {
			if !skipping {
				fmt.Fprintf(w, "%s*\n", indent)
				skipping = true
			}
			continue
		}
		skipping = false
		prev = line
		fmt.Fprintf(w, "%s%012x:", indent, base+uint64(off))
		for i := 0; i < 16; i++ {
			if i%2 == 0 {
				w.WriteByte(' ')
			}
			if i < len(line) {
				fmt.Fprintf(w, "%02x", line[i])
			} else {
				w.WriteString("  ")
			}
		}
		w.WriteString("  ")
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			w.WriteByte(c)
		}
		w.WriteByte('\n')
	}
}

// ---- JSON, shaped like crit's output ----

// object is a JSON object that keeps its keys in order.
type object struct {
	keys []string
	vals []any
}

func (o *object) add(k string, v any) { o.keys = append(o.keys, k); o.vals = append(o.vals, v) }

func (o *object) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(o.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

func writeJSON(w *bufio.Writer, k *image.Kind, entries []*image.Entry) error {
	top := &object{}
	top.add("magic", k.Name)
	list := make([]any, 0, len(entries))
	for _, e := range entries {
		o := jsonMessage(e.Msg.ProtoReflect())
		if ipcJSON(o, e) {
			// messages or semaphore values (sysv.go)
		} else if e.Payload != nil {
			o.add("extra", base64.StdEncoding.EncodeToString(e.Payload))
		}
		if len(e.Chunks) > 0 {
			var cs []any
			for _, c := range e.Chunks {
				cs = append(cs, jsonMessage(c.ProtoReflect()))
			}
			o.add("chunks", cs)
		}
		list = append(list, o)
	}
	top.add("entries", list)
	b, err := json.MarshalIndent(top, "", "    ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	w.Write(b)
	w.WriteByte('\n')
	return nil
}

// Message renders one message as crit-style JSON (for tools and tests).
func Message(m proto.Message) ([]byte, error) {
	return json.MarshalIndent(jsonMessage(m.ProtoReflect()), "", "    ")
}

func jsonMessage(m protoreflect.Message) *object {
	o := &object{}
	for _, fd := range fields(m) {
		v := m.Get(fd)
		if fd.IsList() {
			l := v.List()
			vals := make([]any, l.Len())
			for i := range vals {
				vals[i] = jsonValue(fd, l.Get(i))
			}
			o.add(string(fd.Name()), vals)
			continue
		}
		o.add(string(fd.Name()), jsonValue(fd, v))
	}
	return o
}

func jsonValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return jsonMessage(v.Message())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int32(v.Enum())
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return v.Bool()
	}
	if isHex(fd) {
		return "0x" + strconv.FormatUint(v.Uint(), 16)
	}
	return v.Interface()
}
