package executor

import (
	"fmt"
	"io"
	"sync"
)

// progress draws one line on a terminal: the step and, while memory is
// copied, a percentage. Only used when the CLI sees a terminal.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	total int
	cur   int
	name  string
	last  int // last percentage drawn
}

func (p *progress) step(i int, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur, p.name, p.last = i, name, -1
	fmt.Fprintf(p.w, "\r\x1b[K[%d/%d] %s", i, p.total, name)
}

// bytes is the engine's Progress callback; total may be 0 (unknown). Safe
// for concurrent use; the line never goes back within a step.
func (p *progress) bytes(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if total <= 0 {
		mib := int(done >> 20)
		if mib <= p.last {
			return
		}
		p.last = mib
		fmt.Fprintf(p.w, "\r\x1b[K[%d/%d] %s %d MiB", p.cur, p.total, p.name, mib)
		return
	}
	pct := int(done * 100 / total)
	if pct <= p.last {
		// Equal, or behind: a restore's two lanes report from two
		// goroutines, not always in order.
		return
	}
	p.last = pct
	fmt.Fprintf(p.w, "\r\x1b[K[%d/%d] %s %3d%% (%d MiB)", p.cur, p.total, p.name, pct, done>>20)
}

func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\x1b[K")
}
