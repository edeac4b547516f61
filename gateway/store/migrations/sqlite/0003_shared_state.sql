-- Shared run-time state (issue 11): a version per scope of state that processes cache, and
-- messages held because no route carried them when they arrived.

-- One row per scope ("routes", "accounts", "held", "instance:{name}"): bumped in the
-- transaction that changes what the scope covers, read by every process to see whether
-- its copy is still current.
CREATE TABLE state_versions (
    scope TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- An accepted message no route carried (or one behind such a message in its
-- conversation): kept with its event, in arrival order (id), until a route takes it
-- (`release_held`) or it is too old and becomes a dead letter (`dead_at`, `reason`).
CREATE TABLE held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    target TEXT,
    conversation TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    event BLOB NOT NULL,
    held_at REAL NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL
);
CREATE INDEX held_by_conversation ON held (instance, conversation, id) WHERE dead_at IS NULL;
CREATE INDEX held_by_instance ON held (instance, target, id);
CREATE INDEX held_by_time ON held (held_at) WHERE dead_at IS NULL;
