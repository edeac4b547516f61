-- Events, the job outbox with its lanes, id maps, delivery statuses, provider state, routes:
-- the same tables as the SQLite store's 0001, for several gateway processes at once.
-- Payloads are orjson-encoded bytea (decoded by the gateway, never by SQL); times are UNIX
-- seconds given by the caller. Text is COLLATE "C": names compare by code point, as in
-- SQLite, whatever the database's locale, and kv prefix scans are plain index ranges.
-- The whole file runs in one transaction, under the migration lock.

-- Kept forever on purpose for now: a redelivered webhook must still find its dedupe key.
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance text COLLATE "C" NOT NULL,
    dedupe_key text COLLATE "C" NOT NULL,
    event bytea NOT NULL,
    received_at double precision NOT NULL,
    UNIQUE (instance, dedupe_key)
);

-- An identity never hands out a deleted (finished) id again, so a late `finish` from an
-- expired lease cannot delete a stranger's job.
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text COLLATE "C" NOT NULL CHECK (kind IN ('send', 'ack', 'status')),
    route text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    lane text COLLATE "C" NOT NULL,
    payload bytea NOT NULL,
    state text COLLATE "C" NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    available_at double precision NOT NULL,
    last_error text,
    sending_since double precision,
    dead_at double precision
);
CREATE INDEX jobs_ready_by_lane ON jobs (lane, id) WHERE state = 'ready';
CREATE INDEX jobs_dead_by_time ON jobs (dead_at, id) WHERE state = 'dead';
CREATE INDEX jobs_by_destination ON jobs (destination, state, created_at);

-- One row per lane that has ready jobs: its head job, and the lease. Every writer locks a
-- lane's row before it reads the lane's jobs (claim with SKIP LOCKED), so the row and the
-- jobs agree even when several processes work on one lane's neighbourhood at once.
CREATE TABLE lanes (
    lane text COLLATE "C" PRIMARY KEY,
    destination text COLLATE "C" NOT NULL,
    head bigint NOT NULL,
    available_at double precision NOT NULL,
    lease_owner text COLLATE "C",
    lease_until double precision,
    claimed_through bigint
);
CREATE INDEX lanes_by_destination ON lanes (destination, head);

CREATE TABLE id_map (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    source_id text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    destination_id text COLLATE "C" NOT NULL,
    conversation_id text,
    extra bytea NOT NULL,
    created_at double precision NOT NULL,
    UNIQUE (route, source, source_id)
);
CREATE INDEX id_map_by_destination ON id_map (destination, destination_id);

CREATE TABLE statuses (
    instance text COLLATE "C" NOT NULL,
    native_id text COLLATE "C" NOT NULL,
    status integer NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (instance, native_id)
);

CREATE TABLE kv (
    namespace text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE routes (
    name text COLLATE "C" PRIMARY KEY,
    channel text NOT NULL,
    crm text NOT NULL,
    target text,
    direction text NOT NULL
);
