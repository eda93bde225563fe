-- Tracked commands. Times are Unix milliseconds; payloads and answers are JSON text.
CREATE TABLE commands (
    -- Insertion order: lists and a device's queue come out oldest first.
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    device         TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    name           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    sent_at_ms     INTEGER,
    delivered_at_ms INTEGER,
    finished_at_ms INTEGER,
    expires_at_ms  INTEGER NOT NULL,
    -- The door that last carried it to the device (mqtt, coap, http).
    door           TEXT,
    -- The device's answer: its payload, and a reason for failed, rejected or expired commands.
    response       TEXT,
    reason         TEXT,
    job            TEXT,
    created_by     TEXT NOT NULL,
    -- A caller's retry key (a rule's outbox entry): a second create with it returns the first.
    idempotency_key TEXT UNIQUE
) STRICT;

-- A device's open commands, oldest first (what a door delivers when the device comes back).
CREATE INDEX commands_open_by_device ON commands (device, seq) WHERE state IN ('queued', 'sent', 'delivered');
-- What expires next.
CREATE INDEX commands_open_by_expiry ON commands (expires_at_ms) WHERE state IN ('queued', 'sent', 'delivered');
CREATE INDEX commands_by_job ON commands (job, state) WHERE job IS NOT NULL;
CREATE INDEX commands_by_tenant ON commands (tenant, seq);
