package show

import "testing"

func TestSealsText(t *testing.T) {
	for _, c := range []struct {
		seals uint32
		want  string
	}{{0, "none"}, {1, "SEAL"}, {6, "SHRINK|GROW"}, {0x3f, "SEAL|SHRINK|GROW|WRITE|FUTURE_WRITE|EXEC"}, {0x41, "SEAL|0x40"}} {
		if got := sealsText(c.seals); got != c.want {
			t.Errorf("sealsText(%#x) = %q, want %q", c.seals, got, c.want)
		}
	}
}
