package pageserver

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/crtools/crtools/engine/image"
)

// HeaderSize is the size of a header on the wire: CRIU 4.x's struct
// page_server_iov {u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id}, with the
// 4 bytes of padding the C compiler puts after cmd. (Older CRIU had a u32
// nr_pages and a 24-byte header; crtools does not speak that.) Senders may
// leave garbage in the padding, so it is never read.
const HeaderSize = 32

// Commands (the low 16 bits of Header.Cmd). The values are CRIU's PS_IOV_*.
const (
	CmdAdd         uint32 = 1
	CmdHole        uint32 = 2
	CmdOpen        uint32 = 3
	CmdOpen2       uint32 = 4
	CmdParent      uint32 = 5
	CmdAddF        uint32 = 6
	CmdGet         uint32 = 7
	CmdFlush       uint32 = 0x1023
	CmdFlushNClose uint32 = 0x1024
)

const (
	cmdBits  = 16
	cmdMask  = 1<<cmdBits - 1
	typeBits = 8
	typeMask = 1<<typeBits - 1
)

// Pagemap types in the low 8 bits of dst_id (CRIU's PS_TYPE_*).
const (
	TypePagemap      = 1
	TypeShmemPagemap = 2
)

// Limits on what a header may say. They keep a hostile or confused peer
// from making the server do anything absurd; a real dump never comes near.
const (
	// MaxFramePages is the most pages one ADD may carry (256 MiB). The
	// client splits larger runs.
	MaxFramePages = 1 << 16
	// maxUserAddr is above every user address x86-64 can have (57-bit
	// addresses with 5-level paging). A shmem pagemap's "vaddr" is an
	// offset in the object, which is smaller still.
	maxUserAddr = 1 << 57
	// maxPid is the kernel's PID_MAX_LIMIT.
	maxPid = 1 << 22
)

// Header is one decoded page_server_iov.
type Header struct {
	Cmd     uint32 // command and flags, as on the wire
	NrPages uint64
	Vaddr   uint64
	DstID   uint64
}

// Command is the command part of Cmd.
func (h Header) Command() uint32 { return h.Cmd & cmdMask }

// Flags is the PE_* flags part of Cmd (ADD_F).
func (h Header) Flags() uint32 { return h.Cmd >> cmdBits }

// Len is the number of page bytes the header covers.
func (h Header) Len() uint64 { return h.NrPages * image.PageSize }

// Marshal encodes h into b, which must be HeaderSize bytes long.
func (h Header) Marshal(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint32(b[0:], h.Cmd)
	binary.LittleEndian.PutUint32(b[4:], 0) // padding
	binary.LittleEndian.PutUint64(b[8:], h.NrPages)
	binary.LittleEndian.PutUint64(b[16:], h.Vaddr)
	binary.LittleEndian.PutUint64(b[24:], h.DstID)
}

// UnmarshalHeader decodes a header; b must be HeaderSize bytes long.
func UnmarshalHeader(b []byte) Header {
	_ = b[HeaderSize-1]
	return Header{
		Cmd:     binary.LittleEndian.Uint32(b[0:]),
		NrPages: binary.LittleEndian.Uint64(b[8:]),
		Vaddr:   binary.LittleEndian.Uint64(b[16:]),
		DstID:   binary.LittleEndian.Uint64(b[24:]),
	}
}

// EncodeDstID makes a dst_id for the pagemap image of kind with id.
func EncodeDstID(kind *image.Kind, id uint64) (uint64, error) {
	if id >= 1<<(64-typeBits) {
		return 0, fmt.Errorf("encode pagemap id %d: too large", id)
	}
	switch kind {
	case image.Pagemap:
		return id<<typeBits | TypePagemap, nil
	case image.ShmemPagemap:
		return id<<typeBits | TypeShmemPagemap, nil
	}
	return 0, fmt.Errorf("encode pagemap id: %v is not a pagemap kind", kind)
}

// DecodeDstID returns the pagemap kind and id a dst_id names. Type numbers
// of older CRIU versions (which sent their internal file-type numbers) are
// accepted as CRIU's own page server accepts them.
func DecodeDstID(dst uint64) (*image.Kind, uint64, error) {
	id := dst >> typeBits
	var kind *image.Kind
	switch dst & typeMask {
	case TypePagemap, 10, 11, 16, 17:
		kind = image.Pagemap
	case TypeShmemPagemap, 27, 28, 29, 32, 33, 34:
		kind = image.ShmemPagemap
	default:
		return nil, 0, &ProtocolError{Reason: fmt.Sprintf("dst_id %#x has unknown pagemap type %d", dst, dst&typeMask)}
	}
	if kind == image.Pagemap && (id == 0 || id >= maxPid) {
		return nil, 0, &ProtocolError{Reason: fmt.Sprintf("dst_id %#x names pid %d, outside 1..%d", dst, id, maxPid-1)}
	}
	return kind, id, nil
}

// ErrProtocol is wrapped by every ProtocolError, for errors.Is.
var ErrProtocol = errors.New("page-server protocol error")

// ProtocolError says what was wrong with what the peer sent.
type ProtocolError struct {
	Header *Header // the offending header, if any
	Reason string
}

func (e *ProtocolError) Error() string {
	if e.Header != nil {
		return fmt.Sprintf("page-server protocol error: %s (cmd %#x nr_pages %d vaddr %#x dst_id %#x)",
			e.Reason, e.Header.Cmd, e.Header.NrPages, e.Header.Vaddr, e.Header.DstID)
	}
	return "page-server protocol error: " + e.Reason
}

func (e *ProtocolError) Unwrap() error { return ErrProtocol }

// Check validates a header as received by a server: a known command, and
// for page runs an aligned, non-empty, bounded range with flags crtools
// can store. It returns whether page data follows the header.
func (h Header) Check() (data bool, err error) {
	bad := func(format string, a ...any) (bool, error) {
		hh := h
		return false, &ProtocolError{Header: &hh, Reason: fmt.Sprintf(format, a...)}
	}
	switch h.Command() {
	case CmdOpen, CmdOpen2, CmdParent:
		if h.Flags() != 0 {
			return bad("flags on an open command")
		}
		if _, _, err := DecodeDstID(h.DstID); err != nil {
			return false, err
		}
		return false, nil
	case CmdFlush, CmdFlushNClose:
		if h.Flags() != 0 {
			return bad("flags on a flush command")
		}
		return false, nil
	case CmdHole:
		return bad("pages in a parent image (incremental dump): not supported by crtools")
	case CmdGet, CmdGet + 1:
		return bad("page requests (lazy pages): not supported by crtools")
	case CmdAdd, CmdAddF:
	default:
		return bad("unknown command %#x (is the peer a page-server client?)", h.Command())
	}
	flags := uint32(image.PEPresent)
	if h.Command() == CmdAddF {
		flags = h.Flags()
	}
	switch {
	case flags&image.PEParent != 0:
		return bad("pages in a parent image (incremental dump): not supported by crtools")
	case flags&image.PEPresent == 0:
		return bad("page run without data (flags %#x, lazy pages): not supported by crtools", flags)
	case flags&^(image.PEPresent|image.PELazy) != 0:
		return bad("unknown page flags %#x", flags)
	case h.NrPages == 0:
		return bad("empty page run")
	case h.NrPages > MaxFramePages:
		return bad("%d pages in one run, over the limit of %d", h.NrPages, MaxFramePages)
	case h.Vaddr%image.PageSize != 0:
		return bad("address not page aligned")
	case h.Vaddr >= maxUserAddr || h.Len() > maxUserAddr-h.Vaddr:
		return bad("run beyond the largest user address %#x", uint64(maxUserAddr))
	}
	if _, _, err := DecodeDstID(h.DstID); err != nil {
		return false, err
	}
	return true, nil
}
