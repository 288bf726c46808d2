-- Rack setup (SPEC Z11) and the nexus replicas as zones (X2).

-- The rack, once set up: its plan is recorded, and nexus owns the sleds'
-- zones configs from then on.
CREATE TABLE rack (
    id               TEXT PRIMARY KEY,
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
