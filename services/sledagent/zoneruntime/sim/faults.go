package sim

import "github.com/google/uuid"

// Vanish removes a zone behind the agent's back, as an operator destroying it
// by hand would: the agent is not told.
func (r *Runtime) Vanish(zone uuid.UUID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.journal.remove(zone); err != nil {
		return err
	}
	delete(r.zones, zone)
	return nil
}
