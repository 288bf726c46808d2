// Package api is the root of the Go code generated from proto/ by
// tools/generate.sh. Nothing under it is edited by hand; CI regenerates it and
// fails on any difference.
//
//   - omicron/sledagent/v1: the sled-agent's API (SledAgent) and its
//     fault-injection service (SledAgentSim).
package api
