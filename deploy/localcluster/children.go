package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// child is one process of the cluster.
type child struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process is reaped
	err     error         // cmd.Wait's result; read only after done is closed
}

// childExited is the cause runCtx is cancelled with when a child exits.
type childExited struct{ c *child }

func (e *childExited) Error() string { return e.c.name + " exited: " + fmt.Sprint(e.c.err) }

// startChild starts bin/<binary> with its output in logs/<name>.log and
// reports its exit through fail. The log is truncated: it holds this run
// only, so its tail explains this run's failure.
func (l layout) startChild(name, binary string, args []string, fail context.CancelCauseFunc, stdout io.Writer) (*child, error) {
	c := &child{name: name, logPath: filepath.Join(l.logDir(), name+".log"), done: make(chan struct{})}
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	// The child keeps its own descriptor of the log; ours is not needed
	// once it has started.
	defer log.Close()
	c.cmd = exec.Command(l.bin(binary), args...)
	c.cmd.Dir = l.dir
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = childSysProcAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "started %s pid %d, log %s\n", name, c.cmd.Process.Pid, c.logPath)
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
		fail(&childExited{c})
	}()
	return c, nil
}

// stopAll sends SIGTERM to every child still running, waits for them until
// timeout, then kills the rest; every child is reaped when it returns, so
// none outlives the launcher.
func stopAll(children []*child, timeout time.Duration, stdout io.Writer) {
	for _, c := range children {
		if !exited(c) {
			c.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited meanwhile
		}
	}
	graceful, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, c := range children {
		select {
		case <-c.done:
		case <-graceful.Done():
			fmt.Fprintf(stdout, "%s did not stop within %s; killing it\n", c.name, timeout)
			c.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
			<-c.done
		}
	}
	if len(children) > 0 {
		fmt.Fprintln(stdout, "all cluster processes stopped")
	}
}

func exited(c *child) bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// freeLoopbackAddr picks a free port on loopback for a child to listen on.
// The port could be taken between this and the child's listen; on a
// developer's machine that is unlikely, and the child then fails loudly.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n lines of a file, for a failure report.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)\n", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))) + "\n"
}
