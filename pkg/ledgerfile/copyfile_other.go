//go:build !linux

package ledgerfile

import (
	"os"
	"path/filepath"
)

// write makes data the copy's content, durably: temporary file, fsync,
// rename, fsync of the directory. Without Linux's name exchange every
// write takes a fresh temporary file.
func (c *copyFile) write(data []byte) error {
	dir := filepath.Dir(c.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(c.path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	cleanup := func(err error) error {
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return cleanup(err)
	}
	c.trace("write")
	if err := tmp.Sync(); err != nil {
		return cleanup(err)
	}
	c.trace("fsync file")
	if err := tmp.Close(); err != nil {
		return cleanup(err)
	}
	if err := os.Rename(tmpPath, c.path); err != nil {
		os.Remove(tmpPath)
		return err
	}
	c.trace("rename")
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return err
	}
	c.trace("fsync directory")
	return nil
}
