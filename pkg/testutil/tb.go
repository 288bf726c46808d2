package testutil

import (
	"fmt"
	"os"
	"sync"
)

// TB is the part of testing.TB that test helpers use, so that a command (a
// benchmark that builds a rack, say) can use them too, with a Standalone.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
	Name() string
}

// Standalone is a TB for a command. A failure panics with a *Failure, which
// Run turns back into an error; cleanups run at Close, last first.
type Standalone struct {
	name string
	logf func(format string, args ...any)

	mu       sync.Mutex
	cleanups []func()
	failed   []string
}

var _ TB = (*Standalone)(nil)

// Failure is how a Standalone fails: the message of the Fatal call.
type Failure struct{ Message string }

func (f *Failure) Error() string { return f.Message }

// NewStandalone returns a TB named name whose Logf goes to logf (nil
// discards).
func NewStandalone(name string, logf func(format string, args ...any)) *Standalone {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Standalone{name: name, logf: logf}
}

// Run calls f, turning a Fatal inside it into the error returned, and an
// Errorf into an error too once f is done.
func (s *Standalone) Run(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			failure, ok := r.(*Failure)
			if !ok {
				panic(r)
			}
			err = failure
		}
	}()
	f()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failed) > 0 {
		return &Failure{Message: fmt.Sprint(s.failed)}
	}
	return nil
}

// Close runs the cleanups, last registered first.
func (s *Standalone) Close() {
	s.mu.Lock()
	cleanups := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}

func (s *Standalone) Helper()      {}
func (s *Standalone) Name() string { return s.name }
func (s *Standalone) Cleanup(f func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, f)
	s.mu.Unlock()
}
func (s *Standalone) Logf(f string, a ...any) { s.logf(f, a...) }

func (s *Standalone) Errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, fmt.Sprintf(format, args...))
}

func (s *Standalone) Fatal(args ...any) { panic(&Failure{Message: fmt.Sprint(args...)}) }

func (s *Standalone) Fatalf(format string, args ...any) {
	panic(&Failure{Message: fmt.Sprintf(format, args...)})
}

// TempDir makes a directory that Close removes.
func (s *Standalone) TempDir() string {
	dir, err := os.MkdirTemp("", s.name+"-")
	if err != nil {
		s.Fatalf("making a temporary directory: %v", err)
	}
	s.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
