-- Device twins. Documents are JSON text (objects); times are Unix milliseconds; versions count
-- changes and start at 0.
CREATE TABLE twins (
    device            TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    profile           TEXT,
    -- The effective desired document (profile defaults with the device's overrides merged over),
    -- kept materialized so reads and the SQL table need no merge.
    desired           TEXT NOT NULL,
    desired_overrides TEXT NOT NULL,
    desired_version   INTEGER NOT NULL,
    desired_times     TEXT NOT NULL,
    reported          TEXT NOT NULL,
    reported_version  INTEGER NOT NULL,
    reported_times    TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL
) STRICT;

CREATE INDEX twins_by_profile ON twins (profile) WHERE profile IS NOT NULL;
CREATE INDEX twins_by_tenant ON twins (tenant);

-- The last few desired patches per device (bounded by `history_per_device`), for "changes since".
CREATE TABLE desired_history (
    device  TEXT NOT NULL REFERENCES twins (device) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    patch   TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (device, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE profile_defaults (
    profile TEXT PRIMARY KEY,
    desired TEXT NOT NULL,
    version INTEGER NOT NULL,
    times   TEXT NOT NULL
) STRICT;
