package dump

import "testing"

func TestMemfdName(t *testing.T) {
	for _, c := range []struct{ link, want string }{
		{"/memfd:crt (deleted)", "crt"},
		{"/memfd: (deleted)", ""},
		{"/memfd:a (deleted) b (deleted)", "a (deleted) b"},
		{"/memfd:with space", "with space"},
	} {
		if got := memfdName(c.link); got != c.want {
			t.Errorf("memfdName(%q) = %q, want %q", c.link, got, c.want)
		}
	}
}
