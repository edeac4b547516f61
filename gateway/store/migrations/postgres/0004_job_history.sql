-- What became of each job, kept after the job itself is gone: see the SQLite store's 0004.
ALTER TABLE jobs ADD COLUMN replay_of bigint;

CREATE TABLE job_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL,
    step text COLLATE "C" NOT NULL CHECK (step IN ('delivered', 'retried', 'parked', 'replayed')),
    at double precision NOT NULL,
    started_at double precision,
    attempt integer NOT NULL,
    detail text,
    kind text COLLATE "C" NOT NULL,
    route text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    lane text COLLATE "C" NOT NULL,
    created_at double precision NOT NULL,
    message text COLLATE "C",
    replay_of bigint
);
CREATE INDEX job_log_by_job ON job_log (job_id);
CREATE INDEX job_log_by_message ON job_log (message) WHERE message IS NOT NULL;
CREATE INDEX job_log_by_time ON job_log (at);
