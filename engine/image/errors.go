package image

import (
	"errors"
	"fmt"
)

// ErrUnsupported marks image content that is valid but that crtools does
// not handle (for example compressed page payloads).
var ErrUnsupported = errors.New("unsupported image content")

// BadMagicError: the file does not start with the magic of the kind it
// was opened as.
type BadMagicError struct {
	File      string
	Kind      string // the kind that was expected
	Got, Want uint32 // the per-kind magic (or, for a bad header, the first u32)
	Header    bool   // true if the first u32 (common/service magic) was wrong
}

func (e *BadMagicError) Error() string {
	what := "magic"
	if e.Header {
		what = "header magic"
	}
	return fmt.Sprintf("%s: bad %s %#08x for a %s image (want %#08x)", e.File, what, e.Got, e.Kind, e.Want)
}

// TruncatedError: the file ends inside a header, an entry or its payload.
type TruncatedError struct {
	File   string
	Offset int64  // where the short read started
	What   string // "header", "entry size", "entry 3", "payload of entry 3"
	Want   int64
	Got    int64
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("%s: truncated at offset %d: %s needs %d bytes, only %d left", e.File, e.Offset, e.What, e.Want, e.Got)
}

// DecodeError: an entry's bytes are not a valid message of the expected
// type (Err says why), or an entry field makes no sense.
type DecodeError struct {
	File   string
	Offset int64
	Entry  int
	Type   string
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s: entry %d at offset %d is not a valid %s: %v", e.File, e.Entry, e.Offset, e.Type, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// UnknownImageError: the file's header matches no known kind.
type UnknownImageError struct {
	File          string
	First, Second uint32 // Second is 0 if the first already ruled out an image
}

func (e *UnknownImageError) Error() string {
	if e.First != CommonMagic && e.First != ServiceMagic {
		return fmt.Sprintf("%s: not an image file (starts with %#08x, no known magic)", e.File, e.First)
	}
	return fmt.Sprintf("%s: not a known image kind (magic %#08x %#08x)", e.File, e.First, e.Second)
}

// LimitError: an entry or payload is larger than the reader's limit.
type LimitError struct {
	File   string
	Offset int64
	What   string
	Size   int64
	Limit  int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: %s at offset %d is %d bytes, over the limit of %d", e.File, e.What, e.Offset, e.Size, e.Limit)
}
