package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// RoleAssignment grants a principal a role on the fleet (ResourceID nil) or
// on one project.
type RoleAssignment struct {
	Principal  string
	Resource   string // "fleet" or "project"
	ResourceID *uuid.UUID
	Role       string // "admin", "collaborator" or "viewer"
}

// TokenCreate stores a token by the hash of its secret, with the roles to
// grant its principal, in one transaction.
func (d *DataStore) TokenCreate(ctx context.Context, id uuid.UUID, hash, principal string, expires *time.Time, roles []RoleAssignment, at time.Time) error {
	var expiresAt any
	if expires != nil {
		expiresAt = ts(*expires)
	}
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_token (id, token_hash, principal, time_created, time_expires)
			VALUES ($1, $2, $3, $4, $5)`, id.String(), hash, principal, ts(at), expiresAt); err != nil {
			return err
		}
		for _, r := range roles {
			resourceID := ""
			if r.ResourceID != nil {
				resourceID = r.ResourceID.String()
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO role_assignment (principal, resource_type, resource_id, role, time_created)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (principal, resource_type, resource_id) DO UPDATE SET role = excluded.role`,
				principal, r.Resource, resourceID, r.Role, ts(at)); err != nil {
				return err
			}
		}
		return nil
	})
}

// TokenPrincipal resolves the hash of a presented secret to its principal
// and roles; ErrNotFound for an unknown, deleted or expired token.
func (d *DataStore) TokenPrincipal(ctx context.Context, hash string, now time.Time) (string, []RoleAssignment, error) {
	var principal string
	err := d.db.QueryRowContext(ctx, `SELECT principal FROM api_token
		WHERE token_hash = $1 AND time_deleted IS NULL AND (time_expires IS NULL OR time_expires > $2)`,
		hash, ts(now)).Scan(&principal)
	if isNoRows(err) {
		return "", nil, fmt.Errorf("%w: token", ErrNotFound)
	}
	if err != nil {
		return "", nil, d.classify(err)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT resource_type, resource_id, role FROM role_assignment WHERE principal = $1`, principal)
	if err != nil {
		return "", nil, d.classify(err)
	}
	defer rows.Close()
	var roles []RoleAssignment
	for rows.Next() {
		r := RoleAssignment{Principal: principal}
		var resourceID string
		if err := rows.Scan(&r.Resource, &resourceID, &r.Role); err != nil {
			return "", nil, err
		}
		if resourceID != "" {
			id := uuid.MustParse(resourceID)
			r.ResourceID = &id
		}
		roles = append(roles, r)
	}
	return principal, roles, rows.Err()
}
