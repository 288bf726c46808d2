package racktest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rackplane/rackplane/pkg/testutil"
)

// processStopBound bounds a graceful stop (SIGTERM) before the test fails.
const processStopBound = 30 * time.Second

// Process is a command run by a test, with its log: the one way tests run
// the product's binaries. It dies with the test process (a parent-death
// signal), and is killed when the test ends if it is still running.
type Process struct {
	t    testutil.TB
	name string
	bin  string
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited closes
	// runFrom is the first log line of the current run.
	runFrom int
	log     lineBuffer
}

// StartProcess runs bin with args. The process's stderr (where both
// services log) is kept, line by line, for WaitLog and Log.
func StartProcess(t testutil.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := NewProcess(t, name, bin, args...)
	p.Start()
	return p
}

// NewProcess is a process not yet started: Start runs it.
func NewProcess(t testutil.TB, name, bin string, args ...string) *Process {
	p := &Process{t: t, name: name, bin: bin, args: args}
	t.Cleanup(func() {
		if p.Running() {
			p.signal(syscall.SIGKILL) //nolint:errcheck // it may have exited meanwhile
			<-p.Exited()
		}
	})
	return p
}

// Name is what the test calls the process.
func (p *Process) Name() string { return p.name }

// Start runs the process (again, once it has exited) with its arguments
// and extra ones for this run only; its log continues.
func (p *Process) Start(extra ...string) {
	p.t.Helper()
	cmd := exec.Command(p.bin, append(append([]string{}, p.args...), extra...)...)
	// A test binary that dies must not leave processes behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.err, p.runFrom = cmd, exited, nil, len(p.log.lines())
	p.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
		}
		io.Copy(io.Discard, pipe) //nolint:errcheck // draining a pipe whose reader gave up
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(exited)
	}()
}

// Exited closes when the current run of the process has exited (at once
// before the first run).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		return closed
	}
	return p.exited
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Running reports whether the process runs (a paused one does).
func (p *Process) Running() bool {
	select {
	case <-p.Exited():
		return false
	default:
		return true
	}
}

// Err is how the last run ended (nil while it runs, or after a clean exit).
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the process id of the current run.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Kill is kill -9: the process dies at once and must die of it.
func (p *Process) Kill() {
	p.t.Helper()
	if err := p.signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.Exited()
	var exit *exec.ExitError
	if !errors.As(p.Err(), &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		p.t.Fatalf("%s did not die of SIGKILL: %v", p.name, p.Err())
	}
}

// Stop is a graceful stop (SIGTERM), which must succeed within a bound.
func (p *Process) Stop() {
	p.t.Helper()
	p.signal(syscall.SIGCONT) //nolint:errcheck // a paused process must run to stop
	if err := p.signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("stopping %s: %v", p.name, err)
	}
	select {
	case <-p.Exited():
	case <-time.After(processStopBound):
		p.t.Fatalf("%s did not stop within %s of SIGTERM:\n%s", p.name, processStopBound, p.Log())
	}
	if err := p.Err(); err != nil {
		p.t.Fatalf("%s stopped with %v:\n%s", p.name, err, p.Log())
	}
}

// restart stops the process if it runs, runs it again with its arguments,
// and waits until it logs ready.
func (p *Process) restart(ready string) {
	p.t.Helper()
	if p.Running() {
		p.Stop()
	}
	p.Start()
	p.WaitLog(ready, processStartBound, nil)
}

// Pause stops the process where it is (SIGSTOP): it holds its sockets and
// answers nothing, like a hung machine. It returns once every thread of
// the process has stopped: the signal itself only asks.
func (p *Process) Pause() {
	p.t.Helper()
	if err := p.signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("pausing %s: %v", p.name, err)
	}
	waitThreads(p.t, p.name, p.Pid(), true)
}

// Resume lets a paused process go on (SIGCONT), and returns once it runs.
func (p *Process) Resume() {
	p.t.Helper()
	if err := p.signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("resuming %s: %v", p.name, err)
	}
	waitThreads(p.t, p.name, p.Pid(), false)
}

// waitThreads waits until every thread of process pid is stopped (or none
// is), as /proc/<pid>/task/*/stat say.
func waitThreads(t testutil.TB, name string, pid int, stopped bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue // the thread ended
			}
			// The state follows the command name, which ends with ')'.
			i := strings.LastIndexByte(string(stat), ')')
			if i < 0 || i+2 >= len(stat) {
				return fmt.Errorf("unreadable /proc stat of %s", name)
			}
			if isStopped := stat[i+2] == 'T' || stat[i+2] == 't'; isStopped != stopped {
				return fmt.Errorf("thread %s of %s is in state %c", task.Name(), name, stat[i+2])
			}
		}
		return nil
	})
}

// WaitLog waits for a JSON log line of the current run whose message
// contains msg, and returns its fields. The process exiting first, or abort
// (if not nil) receiving, fails the test.
func (p *Process) WaitLog(msg string, timeout time.Duration, abort <-chan error) map[string]any {
	p.t.Helper()
	var found map[string]any
	p.mu.Lock()
	exited, after := p.exited, p.runFrom
	p.mu.Unlock()
	testutil.WaitFor(p.t, timeout, func() error {
		lines := p.log.lines()
		for _, line := range lines[min(after, len(lines)):] {
			var fields map[string]any
			if json.Unmarshal([]byte(line), &fields) == nil && strings.Contains(fmt.Sprint(fields["msg"]), msg) {
				found = fields
				return nil
			}
		}
		select {
		case <-exited:
			p.t.Fatalf("%s exited (%v) before logging %q:\n%s", p.name, p.Err(), msg, p.Log())
		case err := <-abort:
			p.t.Fatalf("the request ended (%v) before %s logged %q:\n%s", err, p.name, msg, p.Log())
		default:
		}
		return fmt.Errorf("%s has not logged %q", p.name, msg)
	})
	return found
}

// Log is everything the process logged, across its runs.
func (p *Process) Log() string { return p.log.String() }

// lineBuffer keeps a process's log lines for the test to search and print.
type lineBuffer struct {
	mu  sync.Mutex
	all []string
}

func (b *lineBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all = append(b.all, line)
}

func (b *lineBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.all...)
}

func (b *lineBuffer) String() string { return strings.Join(b.lines(), "\n") }
