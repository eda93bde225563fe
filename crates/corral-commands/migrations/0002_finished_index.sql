-- Finished commands by when they finished: what retention deletes, oldest first, without a scan.
CREATE INDEX commands_finished ON commands (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
