-- Pruning events past their retention reads them by age.
CREATE INDEX events_by_time ON events (received_at);
