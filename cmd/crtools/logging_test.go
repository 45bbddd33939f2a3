package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// textLineCases are log lines as zerolog writes them (and a few it does
// not), for the comparison of the hand scanner with encoding/json.
func textLineCases() [][]byte {
	var lines [][]byte
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel).With().Str("job", "dump-42").Logger()
	emit := func(e *zerolog.Event, msg string) {
		e.Float64("t", 0.0123456789).Msg(msg)
		lines = append(lines, append([]byte(nil), buf.Bytes()...))
		buf.Reset()
	}
	emit(log.Info().Str("step", "lock"), "step 1/9: take the lock")
	emit(log.Debug().Str("step", "lock").Float64("took", 0.27322), "step done")
	emit(log.Warn().Int("pid", 7).Int("pid", 8), "duplicate keys: the last one counts")
	emit(log.Error().Err(errors.New(`open "x": no such file`)), "quotes in a value")
	emit(log.Error().Err(errors.New(`a\b`)), `back\slash and "quotes" in the message`)
	emit(log.Info().Str("empty", "").Str("eq", "a=b").Str("tab", "a\tb").Str("nl", "a\nb"), "")
	emit(log.Info().Str("utf8", "héllo wörld ✓").Bool("ok", true).Bool("no", false), "ünïcode")
	emit(log.Info().Uint64("big", 1<<63).Int64("neg", -5).Float64("exp", 1e300).Float64("small", 1e-9), "numbers")
	emit(log.Info().Ints("list", []int{1, 2}).Str("after", "x"), "an array takes the general path")
	emit(log.Info().Dict("d", zerolog.Dict().Str("<a>", "&")), "an object too")
	emit(log.Trace().Interface("nil", nil).Str("ctl", "\x01\x7f"), "null and control characters")
	emit(log.Info().Str("message", "shadowed"), "message given twice")
	emit(log.Info().Str("t", "not a number"), "t given twice")
	emit(log.Info().Str("level", "bogus").Str("k", "\xff"), "invalid UTF-8")
	lines = append(lines,
		[]byte(`{}`),
		[]byte("{}\n"),
		[]byte(` { "a" : 1 , "b":"c" } `+"\n"),
		[]byte(`{"t":1e400,"message":"out of range"}`),
		[]byte(`{"t":-0.5,"level":"info"}`),
		[]byte(`{"t":null,"level":5,"message":7}`),
		[]byte(`{"a":1}{"b":2}`),
		[]byte(`{"a":01}`),
		[]byte(`{"a":1.}`),
		[]byte(`{"a":-}`),
		[]byte(`{"a":tru}`),
		[]byte(`{"a":"\u0041"}`),
		[]byte(`{"a":"\/"}`),
		[]byte(`{"a\"b":"c\\d"}`),
		[]byte(`{"a":1,}`),
		[]byte(`{"a" 1}`),
		[]byte(`not json at all`),
		[]byte(``),
		[]byte(`[1,2]`),
		[]byte(`{"a":"unterminated`),
	)
	return lines
}

// TestAppendTextLineFlatMatchesJSON: where the hand scanner takes a line, it
// gives the text the encoding/json path gives; it takes zerolog's usual
// lines.
func TestAppendTextLineFlatMatchesJSON(t *testing.T) {
	taken := 0
	for _, p := range textLineCases() {
		b, _, ok := appendTextLineFlat(nil, p, nil)
		got := string(b)
		want, wok := textLineJSON(p)
		if !ok {
			continue
		}
		taken++
		if !wok {
			t.Errorf("%q: scanned, but encoding/json refuses it", p)
		} else if got != want {
			t.Errorf("%q:\n got %q\nwant %q", p, got, want)
		}
	}
	if taken < 12 {
		t.Errorf("the scanner took %d lines, want at least 12", taken)
	}
	for _, p := range []string{
		`{"level":"debug","job":"dump-42","step":"lock","took":0.27322,"t":0.0123,"message":"step done"}` + "\n",
		`{"level":"error","error":"open \"x\": no such file","t":1,"message":"quotes"}` + "\n",
	} {
		if _, _, ok := appendTextLineFlat(nil, []byte(p), nil); !ok {
			t.Errorf("%s: not taken by the scanner", p)
		}
	}
}

// TestAppendSeconds: the time prefix is fmt's "(%09.6f) ".
func TestAppendSeconds(t *testing.T) {
	for _, x := range []float64{0, 1e-7, 5e-7, 0.0123456789, 1, 9.9999994, 9.9999995, 9.9999996, 10, 99.9999995,
		99.9999996, 100, 123456.5, 1e300, -0.5, -1e-9, math.Inf(1), math.Inf(-1), math.NaN(), math.Copysign(0, -1)} {
		got := string(appendSeconds(nil, x))
		if want := fmt.Sprintf("(%09.6f) ", x); got != want {
			t.Errorf("%v: got %q, want %q", x, got, want)
		}
	}
}

// TestTextWriter: what reaches the file, for a usual line and for input
// that is no JSON.
func TestTextWriter(t *testing.T) {
	var out bytes.Buffer
	w := &textWriter{w: &out}
	in := `{"level":"info","pid":12,"job":"dump-1","t":0.5,"message":"tree frozen"}` + "\n"
	if n, err := w.Write([]byte(in)); err != nil || n != len(in) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if want := "(00.500000) I: tree frozen job=dump-1 pid=12\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	// A usual line allocates nothing once the buffers have grown.
	line := []byte(`{"level":"debug","job":"dump-1","step":"write-images","took":5.23,"t":0.0143,"message":"step done"}` + "\n")
	if n := testing.AllocsPerRun(100, func() { w.Write(line) }); n != 0 {
		t.Errorf("Write allocates %v times per line, want 0", n)
	}
	out.Reset()
	if _, err := w.Write([]byte("plain text\n")); err != nil || out.String() != "plain text\n" {
		t.Errorf("non-JSON input: %q, %v", out.String(), err)
	}
}

// FuzzAppendTextLineFlat: for any input the scanner takes, encoding/json gives
// the same text.
func FuzzAppendTextLineFlat(f *testing.F) {
	for _, p := range textLineCases() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		b, _, ok := appendTextLineFlat([]byte("x"), p, nil)
		if !ok {
			return
		}
		got := string(b[1:])
		want, wok := textLineJSON(p)
		if !wok || got != want {
			t.Errorf("%q: scanner %q, encoding/json %q (ok %v)", p, got, want, wok)
		}
		if !strings.HasSuffix(got, "\n") {
			t.Errorf("%q: no newline at the end of %q", p, got)
		}
	})
}
