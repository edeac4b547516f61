-- Events, the job outbox with its lanes, id maps, delivery statuses, provider state, routes.
-- Payloads are orjson-encoded BLOBs; times are UNIX seconds (REAL) given by the caller.

-- Kept forever on purpose for now: a redelivered webhook must still find its dedupe key.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    event BLOB NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (instance, dedupe_key)
);

-- AUTOINCREMENT: ids order the jobs of a lane, and a deleted (finished) id must never be
-- handed out again, or a late `finish` from an expired lease could delete a stranger's job.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('send', 'ack', 'status')),
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    lane TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    available_at REAL NOT NULL,
    last_error TEXT,
    sending_since REAL,
    dead_at REAL
);
-- A lane's prefix and its head, without touching the rest of the backlog.
CREATE INDEX jobs_ready_by_lane ON jobs (lane, id) WHERE state = 'ready';
CREATE INDEX jobs_dead_by_time ON jobs (dead_at, id) WHERE state = 'dead';
-- Covers `stats` (depth and oldest ready job per destination) without reading payloads.
CREATE INDEX jobs_by_destination ON jobs (destination, state, created_at);

-- One row per lane that has ready jobs: a cached view of its head job plus the lease.
-- `claimed_through` is the last job id the current lease handed out; the lease lasts until
-- every job up to it is finished, retried or dead-lettered.
CREATE TABLE lanes (
    lane TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    head INTEGER NOT NULL,
    available_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    claimed_through INTEGER
) WITHOUT ROWID;
CREATE INDEX lanes_by_destination ON lanes (destination, head);

CREATE TABLE id_map (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    conversation_id TEXT,
    extra BLOB NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (route, source, source_id)
);
CREATE INDEX id_map_by_destination ON id_map (destination, destination_id);

CREATE TABLE statuses (
    instance TEXT NOT NULL,
    native_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (instance, native_id)
) WITHOUT ROWID;

CREATE TABLE kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE TABLE routes (
    name TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    crm TEXT NOT NULL,
    target TEXT,
    direction TEXT NOT NULL
) WITHOUT ROWID;
