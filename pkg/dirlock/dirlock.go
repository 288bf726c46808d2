// Package dirlock keeps two processes from using one state directory: each
// takes an exclusive lock on a file in the directory and holds it for its
// life. The lock is flock(2)'s, so the kernel releases it when the holder
// dies, kill -9 included: a stale lock never blocks a restart.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FileName is the lock file in each locked directory; it holds the pid of
// the last process that locked it, for the error another one gets.
const FileName = ".lock"

// Lock is a held lock.
type Lock struct{ files []*os.File }

// Acquire locks every directory in dirs, creating each that is missing,
// for what (a name for errors: "sled-agent"). It fails, holding nothing,
// if another process holds any of them.
func Acquire(what string, dirs ...string) (*Lock, error) {
	l := &Lock{}
	for _, dir := range dirs {
		f, err := lockOne(what, dir)
		if err != nil {
			l.Release()
			return nil, err
		}
		l.files = append(l.files, f)
	}
	return l, nil
}

func lockOne(what, dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another %s (pid %s); one directory serves one at a time",
				dir, what, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) //nolint:errcheck // the pid only helps the message
	}
	return f, nil
}

// Release gives every directory up.
func (l *Lock) Release() {
	for _, f := range l.files {
		f.Close() // closing the descriptor releases its flock
	}
	l.files = nil
}
