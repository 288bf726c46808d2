// Package zoneconfig is the sled-agent's model of an Omicron zones config:
// the set of service zones nexus wants a sled to run, numbered by generation.
//
// Parse turns the wire form into a Config, checking everything that can be
// checked before anything changes (SPEC Z2) and reporting every problem at
// once, each naming its field. A Config is canonical (zones sorted by id), so
// two configs with the same content compare Equal whatever the order nexus
// listed them in (Z1).
package zoneconfig
