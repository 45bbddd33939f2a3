package dump

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/crtools/crtools/engine"
	"github.com/crtools/crtools/engine/image"
	"github.com/crtools/crtools/engine/pageserver"
)

// openPageServer connects to the page server a dump was given (--page-server),
// or returns nil without one. The pages then go there instead of into the
// images dir; the other images stay local, as with CRIU.
func openPageServer(ctx context.Context, ps *engine.PageServer, log zerolog.Logger) (*pageserver.Client, error) {
	if ps == nil {
		return nil, nil
	}
	return pageserver.DialServer(ctx, ps, log)
}

// closePageServer asks the page server to store what it received: only
// when that succeeds are the pages safe. With failed set it aborts
// instead, and the page server discards everything it got.
func closePageServer(c *pageserver.Client, failed bool) error {
	if c == nil {
		return nil
	}
	if failed {
		c.Abort()
		return nil
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("send pages to the page server: %w", err)
	}
	return nil
}

// createPages opens where the pages of one pagemap go: the page server c
// if there is one, else pagemap-*.img and pages-<pagesID>.img in dir.
func createPages(c *pageserver.Client, dir string, kind *image.Kind, id uint64, pagesID uint32) (pageserver.PageSink, error) {
	if c != nil {
		return c.CreatePages(kind, id)
	}
	w, err := image.CreatePages(dir, kind, id, pagesID)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return w, nil
}
