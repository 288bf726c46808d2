// Package sledclient is how nexus reaches sled-agents: one gRPC connection
// per sled, found by the address the sled registered, and the one place
// where a sled-agent's answer is classified. Exactly NOT_FOUND with reason
// NO_SUCH_VMM means "the VMM is gone" (ErrVMMGone); a transport failure or a
// timeout means "could not reach the sled" (ErrSledUnreachable), which
// proves nothing about the VMM. Callers branch on these typed errors, never
// on codes or text.
package sledclient
