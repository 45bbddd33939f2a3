package pageserver

import "github.com/crtools/crtools/engine/image"

// PageSink receives the pages of one pagemap, in increasing address order.
// *image.PagesWriter is one (local images); the pagemaps a Client opens
// with CreatePages are the other (a page server). The dump engine writes
// to either through this interface.
type PageSink interface {
	// AddRun records npages present pages at vaddr; data holds their
	// bytes (npages*4096). A page-server sink needs data; a local one
	// accepts nil and lets the caller fill its pages file directly.
	AddRun(vaddr uint64, data []byte, npages uint64) error
	// Close finishes the pagemap. For a local sink the files are then
	// complete and fsynced; for a page-server sink they are made durable
	// by Client.Close.
	Close() error
}

var (
	_ PageSink = (*image.PagesWriter)(nil)
	_ PageSink = (*remotePagemap)(nil)
)
