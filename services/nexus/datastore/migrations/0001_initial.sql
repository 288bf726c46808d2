-- Sleds, projects, instances, VMMs and migrations (SPEC N2).

CREATE TABLE sled (
    id             TEXT PRIMARY KEY,
    address        TEXT NOT NULL,
    ncpus          BIGINT NOT NULL CHECK (ncpus > 0),
    memory_bytes   BIGINT NOT NULL CHECK (memory_bytes > 0),
    zpools         TEXT NOT NULL, -- JSON array of zpool names
    time_created   TIMESTAMPTZ NOT NULL,
    time_modified  TIMESTAMPTZ NOT NULL,
    time_last_seen TIMESTAMPTZ NOT NULL,
    time_deleted   TIMESTAMPTZ
);

CREATE TABLE project (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    time_created  TIMESTAMPTZ NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL,
    time_deleted  TIMESTAMPTZ
);

CREATE UNIQUE INDEX project_name_live ON project (name) WHERE time_deleted IS NULL;

CREATE TABLE instance (
    id                       TEXT PRIMARY KEY,
    project_id               TEXT NOT NULL REFERENCES project (id),
    name                     TEXT NOT NULL,
    description              TEXT NOT NULL,
    hostname                 TEXT NOT NULL,
    ncpus                    BIGINT NOT NULL CHECK (ncpus > 0),
    memory_bytes             BIGINT NOT NULL CHECK (memory_bytes > 0),
    state                    TEXT NOT NULL
        CHECK (state IN ('creating', 'no_vmm', 'vmm', 'failed', 'destroyed')),
    active_propolis_id       TEXT,
    target_propolis_id       TEXT,
    migration_id             TEXT,
    state_generation         BIGINT NOT NULL CHECK (state_generation > 0),
    time_state_updated       TIMESTAMPTZ NOT NULL,
    intended_state           TEXT NOT NULL
        CHECK (intended_state IN ('running', 'stopped', 'guest_shutdown', 'destroyed')),
    auto_restart_policy      TEXT NOT NULL CHECK (auto_restart_policy IN ('never', 'best_effort')),
    time_last_auto_restarted TIMESTAMPTZ,
    -- The updater lock (SPEC N6): who holds it, and a generation bumped on
    -- every acquisition so a stale holder cannot release a newer lock.
    updater_id               TEXT,
    updater_gen              BIGINT NOT NULL DEFAULT 0,
    time_created             TIMESTAMPTZ NOT NULL,
    time_modified            TIMESTAMPTZ NOT NULL,
    time_deleted             TIMESTAMPTZ,
    CONSTRAINT vmm_iff_active_propolis CHECK (
        (state = 'vmm' AND active_propolis_id IS NOT NULL)
        OR (state <> 'vmm' AND active_propolis_id IS NULL)
    ),
    CONSTRAINT migration_has_target CHECK (migration_id IS NULL OR target_propolis_id IS NOT NULL)
);

CREATE UNIQUE INDEX instance_name_live ON instance (project_id, name) WHERE time_deleted IS NULL;

CREATE TABLE vmm (
    id                 TEXT PRIMARY KEY,
    instance_id        TEXT NOT NULL REFERENCES instance (id),
    sled_id            TEXT NOT NULL REFERENCES sled (id),
    state              TEXT NOT NULL CHECK (state IN ('creating', 'starting', 'running', 'stopping',
        'stopped', 'rebooting', 'migrating', 'failed', 'destroyed', 'saga_unwound')),
    failure_reason     TEXT,
    state_generation   BIGINT NOT NULL CHECK (state_generation > 0),
    time_state_updated TIMESTAMPTZ NOT NULL,
    time_created       TIMESTAMPTZ NOT NULL,
    time_deleted       TIMESTAMPTZ
);

CREATE INDEX vmm_by_instance ON vmm (instance_id) WHERE time_deleted IS NULL;
CREATE INDEX vmm_by_sled ON vmm (sled_id) WHERE time_deleted IS NULL;

CREATE TABLE migration (
    id                 TEXT PRIMARY KEY,
    instance_id        TEXT NOT NULL REFERENCES instance (id),
    source_propolis_id TEXT NOT NULL,
    target_propolis_id TEXT NOT NULL,
    source_state       TEXT NOT NULL CHECK (source_state IN ('pending', 'in_progress', 'completed', 'failed')),
    source_gen         BIGINT NOT NULL,
    time_source_updated TIMESTAMPTZ,
    target_state       TEXT NOT NULL CHECK (target_state IN ('pending', 'in_progress', 'completed', 'failed')),
    target_gen         BIGINT NOT NULL,
    time_target_updated TIMESTAMPTZ,
    time_created       TIMESTAMPTZ NOT NULL,
    time_deleted       TIMESTAMPTZ
);
