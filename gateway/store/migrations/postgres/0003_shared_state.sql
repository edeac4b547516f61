-- Shared run-time state (issue 11): a version per scope of state that processes cache, and
-- messages held because no route carried them when they arrived.

-- One row per scope ("routes", "accounts", "held", "instance:{name}"): bumped in the
-- transaction that changes what the scope covers, read by every process to see whether
-- its copy is still current.
CREATE TABLE state_versions (
    scope text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL
);

-- An accepted message no route carried (or one behind such a message in its
-- conversation): kept with its event, in arrival order (id), until a route takes it
-- (`release_held`) or it is too old and becomes a dead letter (`dead_at`, `reason`).
CREATE TABLE held (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance text COLLATE "C" NOT NULL,
    target text COLLATE "C",
    conversation text COLLATE "C" NOT NULL,
    dedupe_key text COLLATE "C" NOT NULL,
    event bytea NOT NULL,
    held_at double precision NOT NULL,
    reason text NOT NULL,
    dead_at double precision
);
CREATE INDEX held_by_conversation ON held (instance, conversation, id) WHERE dead_at IS NULL;
CREATE INDEX held_by_instance ON held (instance, target, id);
CREATE INDEX held_by_time ON held (held_at) WHERE dead_at IS NULL;
