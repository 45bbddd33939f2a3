package image

import (
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crtools/crtools/engine/image/pb"
)

// Header magics. Every image file starts with one of the first two, then
// the magic of its kind; inventory.img starts with its own magic only, and
// raw files (pages-*.img) have no header at all.
const (
	CommonMagic  uint32 = 0x54564319 // IMG_COMMON_MAGIC
	ServiceMagic uint32 = 0x55105940 // IMG_SERVICE_MAGIC (stats, irmap cache)
)

// Header says how a file of a kind starts.
type Header int

const (
	HeaderCommon  Header = iota // CommonMagic, then Kind.Magic
	HeaderService               // ServiceMagic, then Kind.Magic
	HeaderOwn                   // Kind.Magic only (inventory.img)
	HeaderNone                  // raw data, no header, no entries (pages-*.img)
)

// Payload says what follows an entry in the file, besides the next entry.
type Payload int

const (
	PayloadNone      Payload = iota
	PayloadPipeData          // pipe_data_entry.bytes bytes of queued data
	PayloadSkQueue           // sk_packet_entry.length bytes of one message
	PayloadGhost             // the file contents up to EOF (raw, or chunks)
	PayloadTCPStream         // inq_len then outq_len bytes of queue data
	PayloadRest              // undocumented trailing data: the rest of the file
	// SysV IPC images (CRIU's ipc_ns.c): a segment's contents when
	// not in_pagemaps (size rounded up to 4); a queue's qnum messages,
	// each an ipc_msg entry then its text padded to 8; a semaphore
	// set's nsems u16 values padded to 8.
	PayloadIPCShm
	PayloadIPCMsg
	PayloadIPCSem
)

// Kind describes one kind of image file.
type Kind struct {
	// Name is the name crit uses for the magic ("PSTREE", "CORE", ...).
	Name string
	// Magic is the per-kind magic, the second u32 of the header (the
	// first and only one for HeaderOwn).
	Magic  uint32
	Header Header
	// Pattern is the file name: fixed ("pstree.img") or with one
	// printf verb for the id ("core-%d.img", "ghost-file-%x.img").
	Pattern string
	// Payload says what follows each entry.
	Payload Payload
	// Single: the file holds exactly one entry.
	Single bool

	entry *msgType // type of every entry (nil: raw)
	head  *msgType // type of the first entry, if different (pagemap)
}

// msgType is what a Kind needs of its entry type: a constructor and a type
// test. Not a protoreflect.MessageType: getting one calls ProtoReflect,
// which registers every descriptor of package pb (see its doc.go), and
// these are package variables, built at every crtools start.
type msgType struct {
	new func() proto.Message
	is  func(proto.Message) bool
}

// mt is the msgType of *T.
func mt[T any, P interface {
	*T
	proto.Message
}]() *msgType {
	return &msgType{
		new: func() proto.Message { return P(new(T)) },
		is:  func(m proto.Message) bool { _, ok := m.(P); return ok },
	}
}

// name is the full protobuf name of the type. It uses reflection
// (registering package pb's descriptors): for errors and tools, not for
// the dump and restore paths.
func (t *msgType) name() protoreflect.FullName {
	return t.new().ProtoReflect().Descriptor().FullName()
}

// NewEntry returns an empty message of the kind's entry type, or nil for
// raw kinds. first asks for the type of the first entry (which differs
// for pagemaps: a PagemapHead).
func (k *Kind) NewEntry(first bool) proto.Message {
	if first && k.head != nil {
		return k.head.new()
	}
	if k.entry == nil {
		return nil
	}
	return k.entry.new()
}

// EntryName is the full protobuf name of the kind's entry type (by
// reflection: see msgType.name).
func (k *Kind) EntryName() protoreflect.FullName {
	if k.entry == nil {
		return ""
	}
	return k.entry.name()
}

// HasID reports whether the file name carries an id.
func (k *Kind) HasID() bool { return strings.Contains(k.Pattern, "%") }

// FileName is the file name of the image of this kind with the given id
// (ignored if the kind has none).
func (k *Kind) FileName(id uint64) string {
	pre, post, hasID := strings.Cut(k.Pattern, "%")
	if !hasID {
		return k.Pattern
	}
	// By hand, not fmt.Sprintf: a restore names some 300 files of a
	// 50-task tree. A pattern's one verb is %d or %x (see match).
	base := 10
	if post[0] == 'x' {
		base = 16
	}
	return pre + strconv.FormatUint(id, base) + post[1:]
}

// Path joins dir and FileName(id).
func (k *Kind) Path(dir string, id uint64) string {
	return filepath.Join(dir, k.FileName(id))
}

func (k *Kind) String() string { return k.Name }

// The kinds crtools reads and writes. Magic values and file names are
// CRIU's (criu/include/magic.h, criu/image-desc.c).
var (
	Inventory    = &Kind{Name: "INVENTORY", Single: true, Magic: 0x58313116, Header: HeaderOwn, Pattern: "inventory.img", entry: mt[pb.InventoryEntry]()}
	Pstree       = &Kind{Name: "PSTREE", Magic: 0x50273030, Pattern: "pstree.img", entry: mt[pb.PstreeEntry]()}
	Core         = &Kind{Name: "CORE", Single: true, Magic: 0x55053847, Pattern: "core-%d.img", entry: mt[pb.CoreEntry]()}
	IDs          = &Kind{Name: "IDS", Single: true, Magic: 0x54432030, Pattern: "ids-%d.img", entry: mt[pb.TaskKobjIdsEntry]()}
	MM           = &Kind{Name: "MM", Single: true, Magic: 0x57492820, Pattern: "mm-%d.img", entry: mt[pb.MmEntry]()}
	Pagemap      = &Kind{Name: "PAGEMAP", Magic: 0x56084025, Pattern: "pagemap-%d.img", head: mt[pb.PagemapHead](), entry: mt[pb.PagemapEntry]()}
	ShmemPagemap = &Kind{Name: "SHMEM_PAGEMAP", Magic: 0x56084025, Pattern: "pagemap-shmem-%d.img", head: mt[pb.PagemapHead](), entry: mt[pb.PagemapEntry]()}
	Pages        = &Kind{Name: "PAGES", Magic: 0, Header: HeaderNone, Pattern: "pages-%d.img"}
	Fdinfo       = &Kind{Name: "FDINFO", Magic: 0x56213732, Pattern: "fdinfo-%d.img", entry: mt[pb.FdinfoEntry]()}
	Files        = &Kind{Name: "FILES", Magic: 0x56303138, Pattern: "files.img", entry: mt[pb.FileEntry]()}
	FS           = &Kind{Name: "FS", Single: true, Magic: 0x51403912, Pattern: "fs-%d.img", entry: mt[pb.FsEntry]()}
	PipesData    = &Kind{Name: "PIPES_DATA", Magic: 0x56453709, Pattern: "pipes-data.img", Payload: PayloadPipeData, entry: mt[pb.PipeDataEntry]()}
	FifoData     = &Kind{Name: "FIFO_DATA", Magic: 0x59333054, Pattern: "fifo-data.img", Payload: PayloadPipeData, entry: mt[pb.PipeDataEntry]()}
	SkQueues     = &Kind{Name: "SK_QUEUES", Magic: 0x56264026, Pattern: "sk-queues.img", Payload: PayloadSkQueue, entry: mt[pb.SkPacketEntry]()}
	GhostFile    = &Kind{Name: "GHOST_FILE", Magic: 0x52583605, Pattern: "ghost-file-%x.img", Payload: PayloadGhost, entry: mt[pb.GhostFileEntry]()}
	RemapFpath   = &Kind{Name: "REMAP_FPATH", Magic: 0x59133954, Pattern: "remap-fpath.img", entry: mt[pb.RemapFilePathEntry]()}
	MemfdInode   = &Kind{Name: "MEMFD_INODE", Magic: 0x48453499, Pattern: "memfd.img", entry: mt[pb.MemfdInodeEntry]()}
	Timens       = &Kind{Name: "TIMENS", Single: true, Magic: 0x43114433, Pattern: "timens-%d.img", entry: mt[pb.TimensEntry]()}
	Seccomp      = &Kind{Name: "SECCOMP", Single: true, Magic: 0x64413049, Pattern: "seccomp.img", entry: mt[pb.SeccompEntry]()}
	EventpollTfd = &Kind{Name: "EVENTPOLL_TFD", Magic: 0x44433746, Pattern: "eventpoll-tfd.img", entry: mt[pb.EventpollTfdEntry]()}
	TCPStream    = &Kind{Name: "TCP_STREAM", Magic: 0x51465506, Pattern: "tcp-stream-%x.img", Payload: PayloadTCPStream, entry: mt[pb.TcpStreamEntry]()}
	FileLocks    = &Kind{Name: "FILE_LOCKS", Magic: 0x54323616, Pattern: "filelocks.img", entry: mt[pb.FileLockEntry]()}
	TTYInfo      = &Kind{Name: "TTY_INFO", Magic: 0x59453036, Pattern: "tty-info.img", entry: mt[pb.TtyInfoEntry]()}
	TTYData      = &Kind{Name: "TTY_DATA", Magic: 0x59413026, Pattern: "tty-data.img", entry: mt[pb.TtyDataEntry]()}
	UTSNS        = &Kind{Name: "UTSNS", Single: true, Magic: 0x54473203, Pattern: "utsns-%d.img", entry: mt[pb.UtsnsEntry]()}
	IPCVar       = &Kind{Name: "IPCNS_VAR", Single: true, Magic: 0x53115007, Pattern: "ipcns-var-%d.img", entry: mt[pb.IpcVarEntry]()}
	IPCShm       = &Kind{Name: "IPCNS_SHM", Magic: 0x46283044, Pattern: "ipcns-shm-%d.img", Payload: PayloadIPCShm, entry: mt[pb.IpcShmEntry]()}
	IPCMsg       = &Kind{Name: "IPCNS_MSG", Magic: 0x55453737, Pattern: "ipcns-msg-%d.img", Payload: PayloadIPCMsg, entry: mt[pb.IpcMsgEntry]()}
	IPCSem       = &Kind{Name: "IPCNS_SEM", Magic: 0x59573019, Pattern: "ipcns-sem-%d.img", Payload: PayloadIPCSem, entry: mt[pb.IpcSemEntry]()}
	Netdev       = &Kind{Name: "NETDEV", Magic: 0x57373951, Pattern: "netdev-%d.img", entry: mt[pb.NetDeviceEntry]()}
	Netns        = &Kind{Name: "NETNS", Single: true, Magic: 0x55933752, Pattern: "netns-%d.img", entry: mt[pb.NetnsEntry]()}
	Mnts         = &Kind{Name: "MNTS", Magic: 0x55563928, Pattern: "mountpoints-%d.img", entry: mt[pb.MntEntry]()}
	Cgroup       = &Kind{Name: "CGROUP", Single: true, Magic: 0x59383330, Pattern: "cgroup.img", entry: mt[pb.CgroupEntry]()}
	Userns       = &Kind{Name: "USERNS", Single: true, Magic: 0x55474906, Pattern: "userns-%d.img", entry: mt[pb.UsernsEntry]()}
	StatsDump    = &Kind{Name: "STATS", Single: true, Magic: 0x57093306, Header: HeaderService, Pattern: "stats-dump", entry: mt[pb.StatsEntry]()}
	StatsRestore = &Kind{Name: "STATS", Single: true, Magic: 0x57093306, Header: HeaderService, Pattern: "stats-restore", entry: mt[pb.StatsEntry]()}
	IrmapCache   = &Kind{Name: "IRMAP_CACHE", Magic: 0x57004059, Header: HeaderService, Pattern: "irmap-cache", entry: mt[pb.IrmapCacheEntry]()}
)

// Kinds lists every known kind. Where two kinds share a magic (PAGEMAP and
// SHMEM_PAGEMAP, the two stats files) the first listed is the one
// KindByMagic returns.
var Kinds = []*Kind{
	Inventory, Pstree, Core, IDs, MM, Pagemap, ShmemPagemap, Pages, Fdinfo, Files, FS,
	PipesData, FifoData, SkQueues, GhostFile, RemapFpath, MemfdInode, Timens, Seccomp,
	EventpollTfd, TCPStream, FileLocks, TTYInfo, TTYData, UTSNS, IPCVar, IPCShm, IPCMsg,
	IPCSem, Netdev, Netns, Mnts, Cgroup, Userns, StatsDump, StatsRestore, IrmapCache,
}

// KindByMagic returns the kind whose header is (first, second); for
// HeaderOwn kinds first is the kind's magic and second is ignored.
func KindByMagic(first, second uint32) (*Kind, bool) {
	for _, k := range Kinds {
		switch k.Header {
		case HeaderOwn:
			if first == k.Magic {
				return k, true
			}
		case HeaderCommon:
			if first == CommonMagic && second == k.Magic {
				return k, true
			}
		case HeaderService:
			if first == ServiceMagic && second == k.Magic {
				return k, true
			}
		}
	}
	return nil, false
}

// KindByFilename returns the kind of a file named name (a base name or a
// path) and the id in its name (0 if none).
func KindByFilename(name string) (*Kind, uint64, bool) {
	base := filepath.Base(name)
	// Longest pattern first, so "pagemap-shmem-1.img" is not taken for
	// a pagemap with a strange id.
	var best *Kind
	var bestID uint64
	for _, k := range Kinds {
		id, ok := k.match(base)
		if !ok {
			continue
		}
		if best == nil || len(k.Pattern) > len(best.Pattern) {
			best, bestID = k, id
		}
	}
	return best, bestID, best != nil
}

// match reports whether base is a file name of k, and the id in it. A
// pattern has at most one verb, %d (decimal digits) or %x (lower-case
// hex digits). It is matched by hand, not with regexp: compiling a
// regexp for every kind at start-up cost every crtools run about 2 ms.
func (k *Kind) match(base string) (uint64, bool) {
	pre, post, hasID := strings.Cut(k.Pattern, "%")
	if !hasID {
		return 0, base == k.Pattern
	}
	verb, post := post[0], post[1:]
	digits, ok := strings.CutPrefix(base, pre)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, post); !ok || digits == "" {
		return 0, false
	}
	hex := verb == 'x'
	for _, c := range []byte(digits) {
		if !('0' <= c && c <= '9' || hex && 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	n := 10
	if hex {
		n = 16
	}
	id, err := strconv.ParseUint(digits, n, 64)
	return id, err == nil
}
