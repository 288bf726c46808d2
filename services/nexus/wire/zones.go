package wire

import "github.com/google/uuid"

// ReplicaHealthService is the gRPC health service name under which nexus
// replica id reports itself serving on its internal API. Asking for it
// tells that replica from anything else at the same address: another
// process answers NOT_FOUND.
func ReplicaHealthService(id uuid.UUID) string { return "rackplane.nexus.replica/" + id.String() }
