package image

import (
	"testing"

	"github.com/crtools/crtools/engine/image/pb"
)

func TestSigactionIndex(t *testing.T) {
	seen := map[int]bool{}
	for sig := 1; sig <= 64; sig++ {
		i, ok := SigactionIndex(sig)
		if sig == 9 || sig == 19 {
			if ok {
				t.Errorf("signal %d has an index", sig)
			}
			continue
		}
		if !ok || i < 0 || i >= NumSigactions || seen[i] || SigactionSignal(i) != sig {
			t.Errorf("signal %d: index %d %v, back to %d", sig, i, ok, SigactionSignal(i))
		}
		seen[i] = true
	}
	if len(seen) != NumSigactions {
		t.Fatalf("%d indexes", len(seen))
	}
	// In CRIU's own image the SIGUSR1 (10) handler and the glibc SIGRTMIN+1
	// (33) handler sit where these functions say.
	c := &pb.CoreEntry{}
	if err := ReadOne(criuDir, Core, 11215, c); err != nil {
		t.Fatal(err)
	}
	sa := c.GetTc().GetSigactions()
	for i, a := range sa {
		handler := a.GetSigaction() > 1 // not SIG_DFL (0) or SIG_IGN (1)
		if want := SigactionSignal(i) == 10 || SigactionSignal(i) == 33; handler != want {
			t.Errorf("index %d (signal %d): handler %#x", i, SigactionSignal(i), a.GetSigaction())
		}
	}
}
