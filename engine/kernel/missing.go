package kernel

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// MissingError says that a kernel feature the engine needs is not there:
// the syscall behind it failed with ENOSYS. Its message names the feature
// as `crtools check` does.
type MissingError struct {
	Feature string // a Feature's Name
	Err     error
}

func (e *MissingError) Error() string {
	for _, f := range features {
		if f.Name == e.Feature {
			return fmt.Sprintf("kernel feature %s is missing (Linux %s or later; needed for %s): %v", f.Name, f.MinKernel, f.NeededBy, e.Err)
		}
	}
	return fmt.Sprintf("kernel feature %s is missing: %v", e.Feature, e.Err)
}

func (e *MissingError) Unwrap() error { return e.Err }

// IfMissing returns err as a *MissingError naming feature if it says that
// the kernel lacks the syscall (ENOSYS), and err unchanged otherwise.
func IfMissing(feature string, err error) error {
	var me *MissingError
	if err == nil || errors.As(err, &me) || !errors.Is(err, unix.ENOSYS) {
		return err
	}
	return &MissingError{Feature: feature, Err: err}
}
