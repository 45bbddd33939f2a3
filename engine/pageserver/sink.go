package pageserver

import (
	"fmt"
	"sync"

	"github.com/crtools/crtools/engine/image"
)

// PageSink receives the pages of one pagemap, in increasing address order.
// *image.PagesWriter is one (local images); the pagemaps of a Client are
// the other (a page server).
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

// PageStore opens page sinks: where the dump engine sends memory.
type PageStore interface {
	// CreatePages opens the pagemap of kind (image.Pagemap or
	// image.ShmemPagemap) with id (a pid, or a shmem id).
	CreatePages(kind *image.Kind, id uint64) (PageSink, error)
}

var (
	_ PageSink  = (*image.PagesWriter)(nil)
	_ PageSink  = (*remotePagemap)(nil)
	_ PageStore = (*LocalStore)(nil)
	_ PageStore = (*Client)(nil)
)

// LocalStore writes pagemaps and pages files into a directory, numbering
// the pages files 1, 2, ... in the order the pagemaps are created. It is
// safe for concurrent use.
type LocalStore struct {
	Dir string

	mu   sync.Mutex
	next uint32
}

// CreatePages creates pagemap-<id>.img (or pagemap-shmem-<id>.img) and a
// fresh pages-<n>.img in the store's directory.
func (s *LocalStore) CreatePages(kind *image.Kind, id uint64) (PageSink, error) {
	if kind != image.Pagemap && kind != image.ShmemPagemap {
		return nil, fmt.Errorf("create pages: %v is not a pagemap kind", kind)
	}
	s.mu.Lock()
	s.next++
	pagesID := s.next
	s.mu.Unlock()
	w, err := image.CreatePages(s.Dir, kind, id, pagesID)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return w, nil
}
