// Package composetest checks docker-compose.yml without a Docker engine:
// it loads the file with the compose-spec Go library, as docker compose
// does, and parses every container's command line with the real flag
// parsers of nexus and sled-agent, so that the file cannot drift from the
// binaries' flags or hold a configuration they would refuse at start.
// It has only tests.
package composetest
