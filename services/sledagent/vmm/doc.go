// Package vmm is the sled-agent's instance manager: the table of VMMs
// registered on this sled (SPEC V1-V5).
//
// The manager owns each VMM's state generation while the VMM is registered.
// It asks the hypervisor (Propolis; hypervisor/sim here) to move VMMs, learns
// of every state change through Observe, bumps the generation for each, and
// hands the new runtime to the publisher in order, all under one lock, so
// generations are strictly increasing and published in the order they were
// made. Unregistering is rude: the hypervisor terminates the VMM at once, the
// manager answers DESTROYED with the next generation, and nothing more about
// that VMM is published.
//
// A VMM that ends (destroyed, failed, or unregistered) leaves the table but
// is remembered, in memory only, with its final runtime and migration sides
// (the EndedLimit most recent ones). An ended VMM is not "unknown": asking
// about it, stopping or unregistering it again answers its end, and
// registering it again does not bring it back. Only a VMM the sled never
// knew or forgot (a restart, the ForgetVmm fault) is ErrNoSuchVMM, the one
// answer nexus reads as "the sled lost the VMM" and may turn into a failed
// instance (SPEC F5); a VMM that a racing stop destroyed, whose publication
// has not reached nexus yet, must never read that way (F9).
//
// What the manager needs from its neighbours is two small interfaces defined
// here: Hypervisor and Publisher.
package vmm
