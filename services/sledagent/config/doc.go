// Package config is the sled-agent's configuration: a YAML (or JSON) file,
// command-line flags that override it, defaults, and validation that names
// the offending setting.
package config
