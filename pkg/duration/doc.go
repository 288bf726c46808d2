// Package duration is the time.Duration both services' config files use,
// written as "250ms" or "3m" in YAML and JSON.
package duration
