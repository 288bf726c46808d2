package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rackplane/rackplane/services/nexus/model"
)

// TokenCreate stores a token by the hash of its secret, with the roles it
// grants its principal, in one transaction. A token's roles are its own:
// other tokens of the same principal keep theirs.
func (d *DataStore) TokenCreate(ctx context.Context, id uuid.UUID, hash, principal string, expires *time.Time, roles []model.RoleAssignment, at time.Time) error {
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
			if _, err := tx.ExecContext(ctx, `INSERT INTO api_token_role (token_id, resource_type, resource_id, role)
				VALUES ($1, $2, $3, $4)`, id.String(), r.Resource, resourceID, r.Role); err != nil {
				return err
			}
		}
		return nil
	})
}

// TokenByHash resolves the hash of a presented secret to its token;
// model.ErrNotFound for an unknown, deleted or expired token. The token and its
// roles are one statement: every request pays for it.
func (d *DataStore) TokenByHash(ctx context.Context, hash string, now time.Time) (model.Token, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT t.principal, t.time_expires, r.resource_type, r.resource_id, r.role
		FROM api_token t LEFT JOIN api_token_role r ON r.token_id = t.id
		WHERE t.token_hash = $1 AND t.time_deleted IS NULL AND (t.time_expires IS NULL OR t.time_expires > $2)`,
		hash, ts(now))
	if err != nil {
		return model.Token{}, d.classify(err)
	}
	defer rows.Close()
	var (
		tok   model.Token
		found bool
	)
	for rows.Next() {
		var expires dbTime
		var resource, resourceID, role *string
		if err := rows.Scan(&tok.Principal, &expires, &resource, &resourceID, &role); err != nil {
			return model.Token{}, d.classify(err)
		}
		found = true
		if expires.Valid {
			tok.Expires = &expires.Time
		}
		if resource == nil {
			continue // a principal without roles
		}
		r := model.RoleAssignment{Principal: tok.Principal, Resource: *resource, Role: *role}
		if resourceID != nil && *resourceID != "" {
			id, err := uuid.Parse(*resourceID)
			if err != nil {
				return model.Token{}, fmt.Errorf("role assignment of %s: resource_id: %w", tok.Principal, err)
			}
			r.ResourceID = &id
		}
		tok.Roles = append(tok.Roles, r)
	}
	if err := rows.Err(); err != nil {
		return model.Token{}, d.classify(err)
	}
	if !found {
		return model.Token{}, fmt.Errorf("%w: token", model.ErrNotFound)
	}
	return tok, nil
}

// AccessTokenList returns up to limit live (not revoked, not expired)
// tokens in id order after the given id: principal's, or everyone's when
// principal is empty.
func (d *DataStore) AccessTokenList(ctx context.Context, principal string, now time.Time, after string, limit int) ([]model.AccessToken, error) {
	return list(ctx, d, func(row rowScanner) (model.AccessToken, error) {
		var (
			t                model.AccessToken
			id               string
			created, expires dbTime
		)
		if err := row.Scan(&id, &t.Principal, &created, &expires); err != nil {
			return t, err
		}
		t.ID, t.TimeCreated = uuid.MustParse(id), created.Time
		if expires.Valid {
			t.TimeExpires = &expires.Time
		}
		return t, nil
	}, `SELECT id, principal, time_created, time_expires FROM api_token
		WHERE ($1 = '' OR principal = $1) AND time_deleted IS NULL AND (time_expires IS NULL OR time_expires > $2)
			AND id > $3 ORDER BY id LIMIT $4`, principal, ts(now), after, limit)
}

// AccessTokenRevoke revokes a live token: principal's, or anyone's when
// principal is empty. model.ErrNotFound when there is no such live token
// (someone else's token is not found, so its existence does not leak).
func (d *DataStore) AccessTokenRevoke(ctx context.Context, id uuid.UUID, principal string, at time.Time) error {
	res, err := d.db.ExecContext(ctx, `UPDATE api_token SET time_deleted = $3
		WHERE id = $1 AND ($2 = '' OR principal = $2) AND time_deleted IS NULL`, id.String(), principal, ts(at))
	if err != nil {
		return d.classify(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return d.classify(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: access token %s", model.ErrNotFound, id)
	}
	return nil
}

// PrincipalSince returns when principal's first token was created, revoked
// and expired ones included: a principal is known from then on. The zero
// time when it never had one.
func (d *DataStore) PrincipalSince(ctx context.Context, principal string) (time.Time, error) {
	var first dbTime
	err := d.db.QueryRowContext(ctx, `SELECT time_created FROM api_token WHERE principal = $1
		ORDER BY time_created LIMIT 1`, principal).Scan(&first)
	if isNoRows(err) {
		return time.Time{}, nil
	}
	return first.Time, d.classify(err)
}
