-- A token carries the roles it was minted with (N10, N15). Roles used to
-- belong to the principal, shared by all its tokens: a later mint with a
-- lesser role lowered every token of that principal, and a revoked token's
-- grants outlived it. Existing tokens keep the roles their principal held.
CREATE TABLE api_token_role (
    token_id      TEXT NOT NULL REFERENCES api_token (id),
    -- 'fleet' (resource_id '') or 'project' (resource_id the project's id).
    resource_type TEXT NOT NULL CHECK (resource_type IN ('fleet', 'project')),
    resource_id   TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'collaborator', 'viewer')),
    PRIMARY KEY (token_id, resource_type, resource_id)
);

INSERT INTO api_token_role (token_id, resource_type, resource_id, role)
    SELECT t.id, r.resource_type, r.resource_id, r.role
    FROM api_token t JOIN role_assignment r ON r.principal = t.principal;

DROP TABLE role_assignment;
