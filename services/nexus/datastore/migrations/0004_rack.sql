-- Rack setup (SPEC Z11) and the nexus replicas as zones (X2).

-- The rack, once set up: its plan is recorded, and nexus owns the sleds'
-- zones configs from then on. One row at most (one_row): two rack setups
-- racing on an empty database cannot both record theirs. plan is the plan
-- as recorded (JSON), which a later run of rack setup must match.
CREATE TABLE rack (
    id               TEXT PRIMARY KEY,
    one_row          INTEGER NOT NULL DEFAULT 1 UNIQUE CHECK (one_row = 1),
    plan             TEXT NOT NULL,
    time_initialized TIMESTAMPTZ NOT NULL
);

-- The zones config nexus wants each sled to run, numbered as the sled
-- ledgers it (Z1, Z9). zones is JSON: the list of zones.
CREATE TABLE sled_zones (
    sled_id       TEXT PRIMARY KEY,
    generation    BIGINT NOT NULL CHECK (generation >= 1),
    zones         TEXT NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

-- One row per nexus replica: its zone id is the replica's id.
CREATE TABLE nexus_zone (
    id               TEXT PRIMARY KEY,
    sled_id          TEXT NOT NULL,
    internal_address TEXT NOT NULL,
    external_address TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'expunged')),
    time_created     TIMESTAMPTZ NOT NULL,
    time_modified    TIMESTAMPTZ NOT NULL
);
