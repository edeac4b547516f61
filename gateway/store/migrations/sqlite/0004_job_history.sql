-- What became of each job, kept after the job itself is gone (a finished job is deleted):
-- the console's "trace a message" and its traffic chart read it. One row per outcome of an
-- attempt (delivered, retried, parked) and per replay; nothing is written at claim time,
-- so the hot path pays one insert per delivered job. Pruned with the events.
-- `replay_of` on a job names the parked job it replays (a replay makes a new job).
ALTER TABLE jobs ADD COLUMN replay_of INTEGER;

CREATE TABLE job_log (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    step TEXT NOT NULL CHECK (step IN ('delivered', 'retried', 'parked', 'replayed')),
    at REAL NOT NULL,
    started_at REAL,
    attempt INTEGER NOT NULL,
    detail TEXT,
    kind TEXT NOT NULL,
    route TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    lane TEXT NOT NULL,
    created_at REAL NOT NULL,
    message TEXT,
    replay_of INTEGER
);
CREATE INDEX job_log_by_job ON job_log (job_id);
CREATE INDEX job_log_by_message ON job_log (message) WHERE message IS NOT NULL;
CREATE INDEX job_log_by_time ON job_log (at);
