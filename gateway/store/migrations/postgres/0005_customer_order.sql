-- The customer's order among what is not yet delivered (issue 11): a customer message that
-- arrives after newer messages of its conversation that still wait is placed ahead of them.
-- `sort_time` is the provider's timestamp of a message; `position`, when set, is the job's
-- place in its lane instead of its id (a number between two neighbours' keys). Lane heads
-- and leases are kept as such keys, so they become floating point.
ALTER TABLE jobs ADD COLUMN sort_time double precision;
ALTER TABLE jobs ADD COLUMN position double precision;
DROP INDEX jobs_ready_by_lane;
CREATE INDEX jobs_ready_by_lane ON jobs (lane, (COALESCE(position, id))) WHERE state = 'ready';
CREATE INDEX jobs_ready_by_time ON jobs (lane, sort_time)
    WHERE state = 'ready' AND sort_time IS NOT NULL;
ALTER TABLE lanes ALTER COLUMN head TYPE double precision;
ALTER TABLE lanes ALTER COLUMN claimed_through TYPE double precision;
