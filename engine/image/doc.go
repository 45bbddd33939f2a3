// Package image reads and writes image files in CRIU's on-disk format, so
// that CRIU's tools read what crtools writes and crtools restores what CRIU
// wrote.
//
// An image file is a header followed by entries. The header is the u32
// CommonMagic (or ServiceMagic for the stats files) and the u32 magic of
// the file's Kind; inventory.img has its own magic only, and pages-*.img is
// raw page data without any header. Each entry is a little-endian u32
// length and a protobuf message of the kind's type (engine/image/pb). Some
// kinds carry payload bytes after an entry: queued pipe and socket data,
// ghost file contents, TCP queues (see Payload).
//
// Memory is described by pagemap-<id>.img (a PagemapHead naming the pages
// file, then one PagemapEntry per run of pages) and stored in
// pages-<pages_id>.img, the present runs' pages back to back in pagemap
// order. PagesWriter writes both; PageIndex.Lookup maps addresses back to
// offsets in the pages file.
//
// Readers never trust lengths: entries and payloads are bounded by Limits
// and by the file's size, and every failure is a typed error naming the
// file (*BadMagicError, *TruncatedError, *DecodeError, *UnknownImageError,
// *LimitError). Writers buffer; Close does not fsync: whoever publishes a
// set of images makes it durable at once with SyncDir.
//
// This is the only hand-written package that touches the generated types'
// wire format; the rest of crtools uses it to read and write images.
package image
