package show

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/crtools/crtools/engine/image"
)

// hexFields are the fields shown in hex: addresses, masks and flag words.
// The list follows what CRIU marks for crit with (criu).hex and
// (criu).flags, so our JSON looks like crit's; keyed by message name, then
// field name ("*" for every field of the message). Built on first use
// (only crtools show needs it), not in every crtools run.
var hexFields = sync.OnceValue(func() map[string]map[string]bool {
	return map[string]map[string]bool{
		"task_core_entry":      set("blk_sigset", "blk_sigset_extended"),
		"thread_core_entry":    set("futex_rla", "blk_sigset", "blk_sigset_extended"),
		"thread_sas_entry":     set("ss_sp"),
		"thread_info_x86":      set("clear_tid_addr"),
		"user_x86_regs_entry":  set("*"),
		"user_x86_xsave_entry": set("xstate_bv"),
		"rseq_entry":           set("rseq_abi_pointer", "signature"),
		"sa_entry":             set("sigaction", "flags", "restorer", "mask", "mask_extended"),
		"mm_entry": set("mm_start_code", "mm_end_code", "mm_start_data", "mm_end_data", "mm_start_stack",
			"mm_start_brk", "mm_brk", "mm_arg_start", "mm_arg_end", "mm_env_start", "mm_env_end"),
		"vma_entry":            set("start", "end", "pgoff", "prot", "flags", "status", "madv", "fdflags"),
		"pagemap_entry":        set("vaddr", "flags"),
		"reg_file_entry":       set("flags"),
		"memfd_file_entry":     set("flags"),
		"memfd_inode_entry":    set("seals"),
		"pipe_entry":           set("flags"),
		"fifo_entry":           set(),
		"unix_sk_entry":        set("flags", "uflags"),
		"inet_sk_entry":        set("flags"),
		"packet_sock_entry":    set("flags"),
		"netlink_sk_entry":     set("flags"),
		"eventfd_file_entry":   set("flags"),
		"eventpoll_file_entry": set("flags"),
		"eventpoll_tfd_entry":  set("events", "data"),
		"signalfd_entry":       set("flags", "sigmask"),
		"timerfd_entry":        set("flags", "settime_flags"),
		"inotify_file_entry":   set("flags"),
		"inotify_wd_entry":     set("mask", "ignored_mask"),
		"fanotify_file_entry":  set("flags", "faflags", "evflags"),
		"fanotify_mark_entry":  set("mflags", "mask", "ignored_mask"),
		"tty_file_entry":       set("flags"),
		"tcp_stream_entry":     set("opt_mask"),
		"mnt_entry":            set("flags", "sb_flags"),
		"net_device_entry":     set("flags"),
		"tun_link_entry":       set("flags"),
		"posix_timer_entry":    set("sival_ptr"),
		"creds_entry":          set("cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb", "secbits"),
		"fdinfo_entry":         set("flags"),
		"ipc_desc_entry":       set("key"),
	}
})

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// isMode: file modes, shown in octal in text (and as numbers in JSON, as
// crit does).
func isMode(fd protoreflect.FieldDescriptor) bool {
	return fd.Name() == "mode" && fd.Kind() == protoreflect.Uint32Kind
}

func isHex(fd protoreflect.FieldDescriptor) bool {
	switch fd.Kind() {
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
	default:
		return false
	}
	m := hexFields()[string(fd.ContainingMessage().Name())]
	return m["*"] || m[string(fd.Name())]
}

// flagNames decodes some flag words into names, shown next to the hex in
// text output.
func flagNames(fd protoreflect.FieldDescriptor, v uint64) string {
	msg := string(fd.ContainingMessage().Name())
	var table []flagName
	switch msg + "." + string(fd.Name()) {
	case "vma_entry.prot":
		table = protFlags
	case "vma_entry.flags":
		table = mapFlags
	case "vma_entry.status":
		for _, f := range image.VMAStatusNames {
			table = append(table, flagName{uint64(f.Bit), f.Name})
		}
	case "pagemap_entry.flags":
		table = peFlags
	case "sa_entry.flags":
		table = saFlags
	case "reg_file_entry.flags", "memfd_file_entry.flags", "pipe_entry.flags", "eventfd_file_entry.flags",
		"timerfd_entry.flags", "signalfd_entry.flags", "fdinfo_entry.flags", "tty_file_entry.flags":
		return openFlags(v)
	default:
		return ""
	}
	var names []string
	for _, f := range table {
		if v&f.bit != 0 {
			names = append(names, f.name)
			v &^= f.bit
		}
	}
	if v != 0 && len(names) > 0 {
		names = append(names, "0x"+strings.TrimLeft(hex64(v), "0"))
	}
	return strings.Join(names, "|")
}

type flagName struct {
	bit  uint64
	name string
}

var protFlags = []flagName{{1, "READ"}, {2, "WRITE"}, {4, "EXEC"}}

var mapFlags = []flagName{{0x1, "SHARED"}, {0x2, "PRIVATE"}, {0x10, "FIXED"}, {0x20, "ANONYMOUS"},
	{0x100, "GROWSDOWN"}, {0x800, "DENYWRITE"}, {0x1000, "EXECUTABLE"}, {0x2000, "LOCKED"},
	{0x4000, "NORESERVE"}, {0x8000, "POPULATE"}, {0x40000, "HUGETLB"}}

var saFlags = []flagName{{0x1, "SA_NOCLDSTOP"}, {0x2, "SA_NOCLDWAIT"}, {0x4, "SA_SIGINFO"},
	{0x04000000, "SA_RESTORER"}, {0x08000000, "SA_ONSTACK"}, {0x10000000, "SA_RESTART"},
	{0x40000000, "SA_NODEFER"}, {0x80000000, "SA_RESETHAND"}}

var peFlags = []flagName{{1, "PARENT"}, {2, "LAZY"}, {4, "PRESENT"}}

func openFlags(v uint64) string {
	names := []string{[]string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}[v&3]}
	for _, f := range []flagName{{0o100, "O_CREAT"}, {0o1000, "O_TRUNC"}, {0o2000, "O_APPEND"},
		{0o4000, "O_NONBLOCK"}, {0o10000, "O_DSYNC"}, {0o40000, "O_DIRECT"}, {0o100000, "O_LARGEFILE"},
		{0o200000, "O_DIRECTORY"}, {0o400000, "O_NOFOLLOW"}, {0o1000000, "O_NOATIME"},
		{0o2000000, "O_CLOEXEC"}, {0o4010000, "O_SYNC"}, {0o10000000, "O_PATH"}} {
		if v&f.bit == f.bit {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, "|")
}
