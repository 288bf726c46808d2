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
// What the manager needs from its neighbours is two small interfaces defined
// here: Hypervisor and Publisher.
package vmm
