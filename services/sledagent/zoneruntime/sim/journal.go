package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/uuid"
)

// journalName is the file, in the state directory, that holds the zones.
const journalName = "zones.journal"

// An entry is one line of the journal: the new state of a zone, or its
// removal. Replaying the lines in order, the last entry of each zone wins.
type entry struct {
	ID      uuid.UUID   `json:"id"`
	Record  *zoneRecord `json:"record,omitempty"`
	Removed bool        `json:"removed,omitempty"`
}

// journal appends one line per zone state change: a write syscall of a few
// hundred bytes, where a file per zone cost a create and a rename each.
// Lines are not fsynced (see the package doc); a line torn by a kill -9 can
// only be the last one, and replay ignores it.
type journal struct {
	path  string
	file  *os.File
	lines int
}

func openJournal(dir string) (*journal, map[uuid.UUID]*zoneRecord, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating zone runtime directory: %w", err)
	}
	zones, err := replay(dir)
	if err != nil {
		return nil, nil, err
	}
	j := &journal{path: filepath.Join(dir, journalName)}
	// Start from a compact journal: one line per live zone.
	if err := j.rewrite(zones); err != nil {
		return nil, nil, err
	}
	return j, zones, nil
}

func replay(dir string) (map[uuid.UUID]*zoneRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, os.ErrNotExist) {
		return map[uuid.UUID]*zoneRecord{}, nil
	}
	if err != nil {
		return nil, err
	}
	zones := map[uuid.UUID]*zoneRecord{}
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if len(line) == 0 {
			continue
		}
		var e entry
		if err := json.Unmarshal(line, &e); err != nil {
			if i == len(lines)-1 {
				break // torn by a kill during the append
			}
			return nil, fmt.Errorf("zone journal %s line %d: %w", dir, i+1, err)
		}
		if e.Removed {
			delete(zones, e.ID)
		} else if e.Record != nil {
			zones[e.ID] = e.Record
		}
	}
	return zones, nil
}

func (j *journal) append(e entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := j.file.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("zone journal: %w", err)
	}
	j.lines++
	return nil
}

func (j *journal) put(rec *zoneRecord) error { return j.append(entry{ID: rec.Zone.ID, Record: rec}) }

func (j *journal) remove(id uuid.UUID) error { return j.append(entry{ID: id, Removed: true}) }

// compactIfLarge rewrites the journal once dead lines dominate it, keeping
// its size proportional to the zones that exist.
func (j *journal) compactIfLarge(zones map[uuid.UUID]*zoneRecord) {
	if j.lines > 4*len(zones)+1024 {
		// A failed compaction leaves the long journal in place, still valid.
		_ = j.rewrite(zones)
	}
}

// rewrite replaces the journal with one line per zone (temp file + rename,
// so a kill leaves either the old journal or the new one).
func (j *journal) rewrite(zones map[uuid.UUID]*zoneRecord) error {
	tmp := j.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for id, rec := range zones {
		line, err := json.Marshal(entry{ID: id, Record: rec})
		if err != nil {
			f.Close()
			return err
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return err
	}
	file, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if j.file != nil {
		j.file.Close()
	}
	j.file, j.lines = file, len(zones)
	return nil
}

func (j *journal) close() error {
	if j.file == nil {
		return nil
	}
	err := j.file.Close()
	j.file = nil
	return err
}
