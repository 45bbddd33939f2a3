package kernel

import (
	"fmt"
	"runtime"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Feature is one kernel feature the engine relies on.
type Feature struct {
	Name      string // short name, as printed by `crtools check`
	NeededBy  string // what in crtools needs it
	Required  bool   // dump/restore of an ordinary process needs it
	Mainline  bool   // present in mainline Linux (`check --ms` probes only these)
	MinKernel string // the mainline release that brought it
	probe     func(e *env) (detail string, err error)
}

// Result is the outcome of one probe.
type Result struct {
	Name      string  `json:"name"`
	OK        bool    `json:"ok"`
	Required  bool    `json:"required"`
	NeededBy  string  `json:"neededBy"`
	MinKernel string  `json:"minKernel,omitempty"`
	Detail    string  `json:"detail,omitempty"`
	Error     string  `json:"error,omitempty"`
	Millis    float64 `json:"ms"`
}

// Report is the outcome of Check.
type Report struct {
	Kernel   string   `json:"kernel"`
	OK       bool     `json:"ok"` // every required feature works
	Features []Result `json:"features"`
	// MissingRequired and MissingOptional name the features that failed.
	MissingRequired []string `json:"missingRequired"`
	MissingOptional []string `json:"missingOptional"`
}

// Options select what Check probes.
type Options struct {
	// MainlineOnly leaves out features mainline kernels lack (--ms).
	MainlineOnly bool
	// Only, if not empty, names the features to probe.
	Only []string
	Log  zerolog.Logger
}

// Features lists every feature Check knows, in the order it probes them.
func Features() []Feature { return features }

// ErrUnknownFeature is returned by Probe for a name Features lacks.
type ErrUnknownFeature struct{ Name string }

func (e *ErrUnknownFeature) Error() string { return fmt.Sprintf("unknown kernel feature %q", e.Name) }

// Probe runs the probe of one feature and returns nil if it works.
func Probe(name string) error {
	for _, f := range features {
		if f.Name == name {
			r := Check(Options{Only: []string{name}, Log: zerolog.Nop()})
			if !r.Features[0].OK {
				return fmt.Errorf("kernel feature %s: %s", name, r.Features[0].Error)
			}
			return nil
		}
	}
	return &ErrUnknownFeature{Name: name}
}

// Check probes the features (all, or those Options select) and reports.
func Check(opts Options) Report {
	var rep Report
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		rep.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	want := map[string]bool{}
	for _, n := range opts.Only {
		want[n] = true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// ptrace requests must come from the thread that seized the
		// child: keep every probe on this one. Unlocked when all
		// children are dead and reaped (deferred close below runs
		// first), so the thread carries no ptrace state back.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		e := &env{log: opts.Log}
		defer e.close()
		for _, f := range features {
			if len(want) > 0 && !want[f.Name] {
				continue
			}
			if opts.MainlineOnly && !f.Mainline {
				continue
			}
			start := time.Now()
			detail, err := f.probe(e)
			r := Result{
				Name:      f.Name,
				OK:        err == nil,
				Required:  f.Required,
				NeededBy:  f.NeededBy,
				MinKernel: f.MinKernel,
				Detail:    detail,
				Millis:    float64(time.Since(start).Microseconds()) / 1000,
			}
			if err != nil {
				r.Error = err.Error()
				if f.Required {
					rep.MissingRequired = append(rep.MissingRequired, f.Name)
				} else {
					rep.MissingOptional = append(rep.MissingOptional, f.Name)
				}
			}
			opts.Log.Debug().Str("feature", f.Name).Bool("ok", r.OK).Str("error", r.Error).
				Float64("ms", r.Millis).Msg("probe")
			rep.Features = append(rep.Features, r)
		}
	}()
	<-done
	rep.OK = len(rep.MissingRequired) == 0
	if rep.MissingRequired == nil {
		rep.MissingRequired = []string{}
	}
	if rep.MissingOptional == nil {
		rep.MissingOptional = []string{}
	}
	return rep
}

// env holds what probes share: the probe executable and one seized child.
type env struct {
	log      zerolog.Logger
	img      *childImage
	imgErr   error
	c        *child
	seizeErr error
	others   []*child
}

func (e *env) image() (*childImage, error) {
	if e.img == nil && e.imgErr == nil {
		e.img, e.imgErr = newChildImage()
	}
	return e.img, e.imgErr
}

// startChild starts an extra (untraced) probe child, killed at close.
func (e *env) startChild(cloneflags uintptr) (*child, error) {
	img, err := e.image()
	if err != nil {
		return nil, err
	}
	c, err := img.start(cloneflags)
	if err != nil {
		return nil, err
	}
	e.others = append(e.others, c)
	return c, nil
}

// traced returns the shared child, started and seized on first use.
func (e *env) traced() (*child, error) {
	if e.c != nil || e.seizeErr != nil {
		if e.seizeErr != nil {
			return nil, fmt.Errorf("no traced child: %w", e.seizeErr)
		}
		return e.c, nil
	}
	c, err := e.newTraced()
	if err != nil {
		e.seizeErr = err
		return nil, err
	}
	e.c = c
	return c, nil
}

// newTraced starts and seizes a fresh child, killed at close.
func (e *env) newTraced() (*child, error) {
	c, err := e.startChild(0)
	if err != nil {
		return nil, err
	}
	if err := c.seize(); err != nil {
		return nil, err
	}
	return c, nil
}

func (e *env) close() {
	for _, c := range e.others {
		c.kill()
	}
	if e.img != nil {
		e.img.Close()
	}
}
