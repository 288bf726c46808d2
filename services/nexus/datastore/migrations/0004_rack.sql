-- Rack setup (SPEC Z11), the zones nexus owns on each sled (Z9), the
-- nexus replicas as zones (X2) and what the sleds' inventories say.

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

-- The generation of the zones config nexus wants each sled to run (Z1,
-- Z9); its zones are the sled's in-service rows of sled_zone. The last
-- push's outcome is kept for the operator.
CREATE TABLE sled_zones (
    sled_id           TEXT PRIMARY KEY,
    generation        BIGINT NOT NULL CHECK (generation >= 1),
    time_modified     TIMESTAMPTZ NOT NULL,
    pushed_generation BIGINT,      -- the last generation the sled took
    time_pushed       TIMESTAMPTZ,
    push_error        TEXT         -- the last push's error; NULL once one succeeds
);

-- Every zone nexus has put on a sled. An expunged zone keeps its row, with
-- the generation that expunged it and, once the sled's inventory proves it
-- (Z9), when it was confirmed gone.
CREATE TABLE sled_zone (
    id                  TEXT PRIMARY KEY,
    sled_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    pool                TEXT NOT NULL,
    address             TEXT NOT NULL,
    nexus               TEXT,      -- JSON: a nexus zone's listeners and database
    disposition         TEXT NOT NULL CHECK (disposition IN ('in_service', 'expunged')),
    expunged_generation BIGINT,
    time_created        TIMESTAMPTZ NOT NULL,
    time_expunged       TIMESTAMPTZ,
    time_confirmed_gone TIMESTAMPTZ,
    CHECK ((disposition = 'expunged') = (expunged_generation IS NOT NULL)),
    CHECK (time_confirmed_gone IS NULL OR disposition = 'expunged')
);

CREATE INDEX sled_zone_by_sled ON sled_zone (sled_id);

-- One row per nexus replica. A replica set up by rack setup is a zone of
-- a sled (its id is the zone's); one started by hand records itself with
-- no sled. Every saga, updater lock or claim a replica makes checks, in
-- the same statement, that its row is active (X3). When an expunged
-- replica's zone is confirmed gone, its unfinished sagas move to an active
-- replica (X4): how many, to whom and when is kept here.
CREATE TABLE nexus_zone (
    id               TEXT PRIMARY KEY,
    sled_id          TEXT,
    internal_address TEXT NOT NULL,
    external_address TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'expunged')),
    time_created     TIMESTAMPTZ NOT NULL,
    time_modified    TIMESTAMPTZ NOT NULL,
    time_expunged    TIMESTAMPTZ,
    sagas_reassigned BIGINT NOT NULL DEFAULT 0,
    reassigned_to    TEXT,
    time_reassigned  TIMESTAMPTZ
);

-- The last inventory collected from each sled (Z9): the generation it
-- ledgers, the one its last completed reconciliation reached, the zones
-- still present after it (JSON, with each one's result) and the VMMs it
-- runs (JSON).
CREATE TABLE sled_inventory (
    sled_id               TEXT PRIMARY KEY,
    time_collected        TIMESTAMPTZ NOT NULL,
    ledgered_generation   BIGINT,  -- NULL: nothing ledgered
    reconciled_generation BIGINT,  -- NULL: no pass completed
    reconciler            TEXT NOT NULL,
    zones                 TEXT NOT NULL,
    vmms                  TEXT NOT NULL
);

-- The instances whose updater lock is held: the operator's view of who
-- holds what (X6), without scanning every instance.
CREATE INDEX instance_updater_held ON instance (updater_id) WHERE updater_id IS NOT NULL;
