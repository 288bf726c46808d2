-- Durable sagas (SPEC N5): one row per saga, and its log of node events.

CREATE TABLE saga (
    id                 TEXT PRIMARY KEY,
    template_name      TEXT NOT NULL,
    params             TEXT NOT NULL, -- JSON
    -- The nexus that runs the saga and resumes it after a restart.
    owner_nexus_id     TEXT NOT NULL,
    state              TEXT NOT NULL
        CHECK (state IN ('running', 'unwinding', 'done', 'unwound', 'stuck')),
    time_created       TIMESTAMPTZ NOT NULL,
    time_state_changed TIMESTAMPTZ NOT NULL
);

CREATE INDEX saga_unfinished_by_owner ON saga (owner_nexus_id) WHERE state IN ('running', 'unwinding');
CREATE INDEX saga_stuck ON saga (time_created) WHERE state = 'stuck';

-- At most one event of each type per node: appending is idempotent, and
-- replaying the log needs no ordering.
CREATE TABLE saga_node_event (
    saga_id      TEXT NOT NULL REFERENCES saga (id),
    node_name    TEXT NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type IN ('started', 'succeeded', 'failed',
        'undo_started', 'undo_succeeded', 'undo_failed')),
    output       TEXT, -- JSON of a succeeded action, if it returned any
    error        TEXT, -- text of a failed action or undo
    time_created TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (saga_id, node_name, event_type)
);
