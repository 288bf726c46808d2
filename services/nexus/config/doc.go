// Package config is nexus's configuration: a YAML (or JSON) file, flags that
// override it, defaults, and validation naming the offending setting.
package config
