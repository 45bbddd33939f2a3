package image

import "sync"

// ContentMemo keeps what was decoded from each distinct content of a part
// (an image kind, a part of a core entry), so that each is decoded once:
// a restored tree has many byte-identical images and parts (CoreShare,
// restore's image cache). The values are shared by every caller that
// asked for the same content, who must only read them. Safe for
// concurrent use; the zero value is empty and ready.
type ContentMemo[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]map[string]*memoEntry[V]
}

// memoEntry is one content's value; once guards the decoding, so that a
// second caller of the same content waits for the first one's decode.
type memoEntry[V any] struct {
	once sync.Once
	v    V
}

// Get returns the value decode makes of content, a content of part,
// calling decode only for the first caller of each distinct content.
// content is not kept (the key is a copy): its buffer may be reused once
// Get returns.
func (c *ContentMemo[K, V]) Get(part K, content []byte, decode func() V) V {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[K]map[string]*memoEntry[V]{}
	}
	byContent := c.m[part]
	if byContent == nil {
		byContent = map[string]*memoEntry[V]{}
		c.m[part] = byContent
	}
	e := byContent[string(content)] // no copy of content to look up
	if e == nil {
		e = &memoEntry[V]{}
		byContent[string(content)] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.v = decode() })
	return e.v
}
