package datastore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/pgtest"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// openReadOnlyPooled opens a PostgreSQL datastore whose pool holds one
// connection, idle, on which the session has been made read-only: what a
// pooled connection looks like once its server refuses writes while
// staying up.
func openReadOnlyPooled(t *testing.T) *DataStore {
	t.Helper()
	ctx := context.Background()
	d, err := Open(ctx, Postgres, pgtest.DSN(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	d.db.SetMaxOpenConns(1)
	conn, err := d.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	return d
}

func newProject() model.Project {
	return model.Project{ID: uuid.New(), Name: "p-" + uuid.NewString()[:8], TimeCreated: time.Now()}
}

func TestR2_APooledConnectionWhoseServerTurnedReadOnlyIsDroppedAndTheWriteGoesThrough(t *testing.T) {
	d := openReadOnlyPooled(t)
	if err := d.ProjectCreate(context.Background(), newProject()); err != nil {
		t.Fatalf("a write through a pool whose connection turned read-only: %v; want it written on a new connection", err)
	}
}

func TestR2_AWriteRefusedAsReadOnlyIsUnavailableNotAnInternalError(t *testing.T) {
	ctx := context.Background()
	d, err := Open(ctx, Postgres, pgtest.DSN(t), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conn, err := d.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	_, err = conn.ExecContext(ctx, `INSERT INTO project (id, name, description, time_created, time_modified) VALUES ($1, 'ro', '', $2, $2)`,
		uuid.NewString(), ts(time.Now()))
	if err := d.classify(err); !errors.Is(err, model.ErrDatabaseUnavailable) {
		t.Fatalf("a write refused as read-only classifies as %v; want ErrDatabaseUnavailable (503, retried)", err)
	}
}

func TestR2_NoServerToConnectToIsUnavailableNotAnInternalError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	db, err := openPostgres(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&target_session_attrs=read-write", port))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := &DataStore{db: db, backend: Postgres}
	if err := d.classify(db.PingContext(context.Background())); !errors.Is(err, model.ErrDatabaseUnavailable) {
		t.Fatalf("connecting where no server listens classifies as %v; want ErrDatabaseUnavailable", err)
	}
}
