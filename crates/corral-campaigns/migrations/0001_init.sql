-- Artifacts and campaigns. Times are Unix milliseconds; specs are JSON text.
CREATE TABLE artifacts (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    tenant         TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    signature      TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    signed_by      TEXT NOT NULL,
    profiles       TEXT NOT NULL,
    hardware       TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    UNIQUE (tenant, name, version)
) STRICT;

CREATE TABLE campaigns (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    tenant         TEXT NOT NULL,
    name           TEXT NOT NULL,
    -- {"kind": "firmware", "artifact", "version"} or {"kind": "configuration", "desired"}
    rollout        TEXT NOT NULL,
    target         TEXT NOT NULL,
    dynamic        INTEGER NOT NULL,
    plan           TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    created_by     TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER
) STRICT;

CREATE TABLE campaign_devices (
    campaign       TEXT NOT NULL,
    device         TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    wave           INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT,
    command        TEXT,
    notified_at_ms INTEGER,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (campaign, device)
) STRICT, WITHOUT ROWID;

CREATE INDEX campaign_devices_in_flight ON campaign_devices (campaign)
    WHERE state IN ('notified', 'downloading', 'downloaded', 'installing');
