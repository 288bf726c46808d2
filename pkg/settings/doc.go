// Package settings loads a service's configuration in layers, each over
// the one before: the service's defaults, a YAML (or JSON) file given with
// --config, environment variables, and the flags given explicitly on the
// command line. Both services describe their settings once, as a struct
// whose fields carry a key (the `koanf` tag, also the file's key), a flag
// name (the `flag` tag; the key with dashes by default, "-" for none) and
// a help text (the `help` tag); the flags and the environment variables
// (prefix plus the key in capitals: RACKPLANE_NEXUS_DATABASE_URL) follow from it.
//
// A key the file does not know is an error, so a misspelt setting is never
// silently ignored. Paths in the file that the service names as relative to
// the file are made so; paths from flags and the environment stay relative
// to the working directory, as a shell user expects. Lists come from the
// environment comma-separated.
package settings
