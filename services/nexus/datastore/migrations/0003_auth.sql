-- API tokens and role assignments (SPEC N10).

CREATE TABLE api_token (
    id           TEXT PRIMARY KEY,
    -- SHA-256 of the secret; the secret itself is shown once and never stored.
    token_hash   TEXT NOT NULL UNIQUE,
    principal    TEXT NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    time_expires TIMESTAMPTZ,
    time_deleted TIMESTAMPTZ
);

CREATE TABLE role_assignment (
    principal     TEXT NOT NULL,
    -- 'fleet' (resource_id '') or 'project' (resource_id the project's id).
    resource_type TEXT NOT NULL CHECK (resource_type IN ('fleet', 'project')),
    resource_id   TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'collaborator', 'viewer')),
    time_created  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, resource_type, resource_id)
);
