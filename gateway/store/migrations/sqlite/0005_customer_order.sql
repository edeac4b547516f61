-- The customer's order among what is not yet delivered (issue 11): a customer message that
-- arrives after newer messages of its conversation that still wait is placed ahead of them.
-- `sort_time` is the provider's timestamp of a message; `position`, when set, is the job's
-- place in its lane instead of its id (a number between two neighbours' keys).
ALTER TABLE jobs ADD COLUMN sort_time REAL;
ALTER TABLE jobs ADD COLUMN position REAL;
DROP INDEX jobs_ready_by_lane;
CREATE INDEX jobs_ready_by_lane ON jobs (lane, COALESCE(position, id)) WHERE state = 'ready';
-- Whether a lane holds a newer message than one just arrived, without reading the lane.
CREATE INDEX jobs_ready_by_time ON jobs (lane, sort_time)
    WHERE state = 'ready' AND sort_time IS NOT NULL;
