package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// printer writes what a command got: a table for people, or the API's
// JSON as it came (-o json).
type printer struct {
	out  io.Writer
	json bool
}

func (s *session) printer(cmd *cobra.Command) (printer, error) {
	switch s.output {
	case "table":
		return printer{out: cmd.OutOrStdout()}, nil
	case "json":
		return printer{out: cmd.OutOrStdout(), json: true}, nil
	}
	return printer{}, fmt.Errorf("--output: %q is neither table nor json", s.output)
}

// columns say how a table shows one kind of the API's objects: each is
// decoded from its JSON into a T and gives one row.
type columns[T any] struct {
	header []string
	row    func(T) []string
}

// printObject prints one object the API answered.
func printObject[T any](p printer, body []byte, cols columns[T]) error {
	if p.json {
		return p.raw(body)
	}
	v, err := decode[T](body)
	if err != nil {
		return err
	}
	return p.table(cols.header, [][]string{cols.row(v)})
}

// printItems prints a listing, every page of it: as JSON, the API's list
// shape with every item and no next_page.
func printItems[T any](p printer, items []json.RawMessage, cols columns[T]) error {
	if p.json {
		if items == nil {
			items = []json.RawMessage{}
		}
		data, err := json.Marshal(struct {
			Items []json.RawMessage `json:"items"`
		}{items})
		if err != nil {
			return err
		}
		return p.raw(data)
	}
	rows := make([][]string, 0, len(items))
	for _, item := range items {
		v, err := decode[T](item)
		if err != nil {
			return err
		}
		rows = append(rows, cols.row(v))
	}
	return p.table(cols.header, rows)
}

// decode reads an object the API answered.
func decode[T any](body []byte) (T, error) {
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return v, fmt.Errorf("reading the API's answer: %w", err)
	}
	return v, nil
}

// raw prints the API's JSON, indented.
func (p printer) raw(body []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		return fmt.Errorf("reading the API's answer: %w", err)
	}
	b.WriteByte('\n')
	_, err := p.out.Write(b.Bytes())
	return err
}

// table aligns rows under a header; an empty cell shows as "-".
func (p printer) table(header []string, rows [][]string) error {
	w := tabwriter.NewWriter(p.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, cell := range row {
			cells[i] = cellText(cell)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	return w.Flush()
}

// say prints a sentence, in table mode only: JSON output is the API's
// answers and nothing else.
func (p printer) say(format string, args ...any) {
	if !p.json {
		fmt.Fprintf(p.out, format+"\n", args...)
	}
}

// cellText keeps a cell on one line of its column.
func cellText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	return s
}

// timeText is a timestamp to the second, in UTC; none is empty.
func timeText(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// bytesText shows a size in the largest binary unit that divides it.
func bytesText(n uint64) string {
	for _, u := range []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + " " + u.name
		}
	}
	return strconv.FormatUint(n, 10) + " B"
}

// parseBytes reads a size such as 1GiB, 512MiB or 1073741824 (bytes).
func parseBytes(s string) (uint64, error) {
	text := strings.TrimSpace(s)
	shift := uint(0)
	for _, u := range []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}} {
		if strings.HasSuffix(text, u.name) {
			text, shift = strings.TrimSpace(strings.TrimSuffix(text, u.name)), u.shift
			break
		}
	}
	n, err := strconv.ParseUint(text, 10, 64)
	if err != nil || n > math.MaxUint64>>shift {
		return 0, fmt.Errorf("%q is not a size such as 1GiB, 512MiB or a number of bytes", s)
	}
	return n << shift, nil
}

func boolText(b bool) string { return strconv.FormatBool(b) }
