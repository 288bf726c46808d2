package duration

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration read from and written to text like "250ms".
type Duration time.Duration

// UnmarshalJSON parses "250ms", "3m" and the like.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`durations are strings like "250ms": %w`, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalText parses "250ms", "3m" and the like, from a config file, an
// environment variable or a flag.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// String writes the duration as text.
func (d Duration) String() string { return time.Duration(d).String() }
