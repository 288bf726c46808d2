package ledgerfile

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// write makes data the copy's content, durably: it is written to the
// temporary file and fsynced, renamed over the copy, and the directory is
// fsynced. Once write returns nil a crash or a power loss leaves the copy
// holding data; before that it leaves the copy as it was or as data, never
// anything else, because the file the copy's name points to is never
// written to.
//
// The rename is an exchange when the copy is a regular file: the old
// content then stays under the temporary name, and once the directory
// fsync has made the exchange durable nothing refers to it, so the next
// write fills that file in place (spare). A new file's fsync has to commit
// its inode and blocks to the filesystem's journal, and a rename over the
// old file frees it: on ext4 the two made a write take 1.5 to 2 times as
// long.
func (c *copyFile) write(data []byte) error {
	dir, name := filepath.Dir(c.path), filepath.Base(c.path)
	// Every name below is resolved in this one directory, the one fsynced
	// at the end, even if the path is replaced meanwhile.
	dfd, err := retryEINTR(func() (int, error) {
		return unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)

	// live is the copy's file, nil when there is none or it is not a
	// plain file: then there is nothing to exchange with, or to tell the
	// spare from.
	var live *unix.Stat_t
	if st := new(unix.Stat_t); unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		live = st
	}
	// Cleared until this write is durable: after a failure the spare may
	// still be the copy on disk, or become it again after a crash.
	reuse := c.spare && live != nil
	c.spare = false
	fd, size, err := c.openTemp(dfd, reuse, live)
	if err != nil {
		return err
	}
	tmpPath := filepath.Join(dir, c.tmp)
	fail := func(op string, err error) error {
		unix.Close(fd)
		unix.Unlinkat(dfd, c.tmp, 0)
		return &os.PathError{Op: op, Path: tmpPath, Err: err}
	}
	for off := 0; off < len(data); {
		n, err := retryEINTR(func() (int, error) { return unix.Pwrite(fd, data[off:], int64(off)) })
		if err != nil {
			return fail("write", err)
		}
		if n == 0 {
			return fail("write", unix.EIO)
		}
		off += n
	}
	c.trace("write")
	if size > int64(len(data)) {
		if err := ignoreEINTR(func() error { return unix.Ftruncate(fd, int64(len(data))) }); err != nil {
			return fail("truncate", err)
		}
	}
	if err := ignoreEINTR(func() error { return unix.Fsync(fd) }); err != nil {
		return fail("fsync", err)
	}
	c.trace("fsync file")
	if err := unix.Close(fd); err != nil {
		unix.Unlinkat(dfd, c.tmp, 0)
		return &os.PathError{Op: "close", Path: tmpPath, Err: err}
	}

	exchanged := false
	if live != nil && !c.noExchange {
		err := unix.Renameat2(dfd, c.tmp, dfd, name, unix.RENAME_EXCHANGE)
		switch {
		case err == nil:
			exchanged = true
		case errors.Is(err, unix.ENOENT): // the copy went meanwhile
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
			c.noExchange = true
		default:
			unix.Unlinkat(dfd, c.tmp, 0)
			return &os.LinkError{Op: "exchange", Old: tmpPath, New: c.path, Err: err}
		}
	}
	if !exchanged {
		if err := unix.Renameat(dfd, c.tmp, dfd, name); err != nil {
			unix.Unlinkat(dfd, c.tmp, 0)
			return &os.LinkError{Op: "rename", Old: tmpPath, New: c.path, Err: err}
		}
	}
	c.trace("rename")
	// The rename is durable only once the directory entry is.
	err = c.dirSyncErrForTest
	if err == nil {
		err = ignoreEINTR(func() error { return unix.Fsync(dfd) })
	}
	if err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	c.trace("fsync directory")
	c.spare = exchanged
	return nil
}

// openTemp opens the temporary file for writing and returns its size. With
// reuse it opens the spare, unless the spare has gone (a Load removes it)
// or is not a plain file of its own: one linked elsewhere, to the copy
// itself above all, must not be written in place. Otherwise it creates
// the file anew.
func (c *copyFile) openTemp(dfd int, reuse bool, live *unix.Stat_t) (int, int64, error) {
	if reuse {
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(dfd, c.tmp, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		})
		if err == nil {
			var spare unix.Stat_t
			if unix.Fstat(fd, &spare) == nil && spare.Mode&unix.S_IFMT == unix.S_IFREG && spare.Nlink == 1 &&
				(live.Dev != spare.Dev || live.Ino != spare.Ino) {
				return fd, spare.Size, nil
			}
			unix.Close(fd)
		}
	}
	tmpPath := filepath.Join(filepath.Dir(c.path), c.tmp)
	if err := unix.Unlinkat(dfd, c.tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return -1, 0, &os.PathError{Op: "remove", Path: tmpPath, Err: err}
	}
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(dfd, c.tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return -1, 0, &os.PathError{Op: "create", Path: tmpPath, Err: err}
	}
	return fd, 0, nil
}

func retryEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

func ignoreEINTR(f func() error) error {
	_, err := retryEINTR(func() (struct{}, error) { return struct{}{}, f() })
	return err
}
