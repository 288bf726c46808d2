package sim

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/grpcconn"
	"github.com/rackplane/rackplane/pkg/rackpki"
)

// MigrationPeer carries the simulated migration protocol to the hypervisor
// of the source sled.
type MigrationPeer interface {
	BeginMigrationOut(sourceSled string, source, migration, target uuid.UUID) error
	EndMigrationOut(sourceSled string, source, migration uuid.UUID, succeeded bool) error
}

// GRPCPeer reaches other sleds' hypervisors through their sled-agents'
// SimMigration service.
type GRPCPeer struct {
	Timeout time.Duration
	// Trust is the sled's rack identity: the other sled must be one too
	// (S2, S4).
	Trust rackpki.Trust

	mu     sync.Mutex
	closed bool
	conns  map[string]*grpc.ClientConn
}

var _ MigrationPeer = (*GRPCPeer)(nil)

func (p *GRPCPeer) client(addr string) (sledagentv1.SimMigrationClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("migration peer is closed")
	}
	if conn, ok := p.conns[addr]; ok {
		return sledagentv1.NewSimMigrationClient(conn), nil
	}
	conn, err := grpcconn.Dial(addr, p.Trust, rackpki.Identity{Kind: rackpki.Sled}, 0)
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[addr] = conn
	return sledagentv1.NewSimMigrationClient(conn), nil
}

// BeginMigrationOut implements MigrationPeer.
func (p *GRPCPeer) BeginMigrationOut(sourceSled string, source, migration, target uuid.UUID) error {
	c, err := p.client(sourceSled)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
	defer cancel()
	_, err = c.BeginMigrationOut(ctx, &sledagentv1.BeginMigrationOutRequest{
		SourceVmmId: source.String(), MigrationId: migration.String(), TargetVmmId: target.String()})
	return err
}

// EndMigrationOut implements MigrationPeer.
func (p *GRPCPeer) EndMigrationOut(sourceSled string, source, migration uuid.UUID, succeeded bool) error {
	c, err := p.client(sourceSled)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
	defer cancel()
	_, err = c.EndMigrationOut(ctx, &sledagentv1.EndMigrationOutRequest{
		SourceVmmId: source.String(), MigrationId: migration.String(), Succeeded: succeeded})
	return err
}

// Close releases the connections to other sleds.
func (p *GRPCPeer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}
