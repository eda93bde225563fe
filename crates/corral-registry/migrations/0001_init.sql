-- Corral registry, schema version 1.
-- Times are INTEGER Unix milliseconds (UTC) everywhere; JSON documents are TEXT.
-- STRICT tables so a wrong type is an error at write time rather than a surprise at read time.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT,
    created_at INTEGER NOT NULL
) STRICT;

-- The contract promises a `default` tenant on every installation.
INSERT INTO tenants (id, name, created_at)
VALUES ('default', 'Default tenant', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

-- Device kinds. A row may be an empty placeholder (created when a device names a profile that
-- nobody has declared yet); `put_profile` fills it in later.
CREATE TABLE profiles (
    name        TEXT PRIMARY KEY,
    description TEXT,
    attributes  TEXT NOT NULL DEFAULT '[]',  -- JSON array of {name, type, description?}
    telemetry   TEXT NOT NULL DEFAULT '[]',  -- JSON array of {name, type, unit?}
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    profile    TEXT REFERENCES profiles (name),
    tenant     TEXT NOT NULL REFERENCES tenants (id),
    site       TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',   -- JSON object
    tags       TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    status     TEXT NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'quarantined', 'decommissioned')),
    gateway    TEXT REFERENCES devices (id),
    last_seen  INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Listing pages by id within a tenant is the common console query.
CREATE INDEX devices_tenant_id ON devices (tenant, id);
CREATE INDEX devices_site ON devices (site);
CREATE INDEX devices_profile ON devices (profile);
CREATE INDEX devices_gateway ON devices (gateway);

-- Only the SHA-256 of a token is stored; the primary key makes "look the token up by its hash"
-- an index probe. Rotated tokens keep their row (revoked_at set) for history.
CREATE TABLE device_tokens (
    hash       TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices (id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX device_tokens_device ON device_tokens (device_id);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    tenant       TEXT REFERENCES tenants (id),
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

-- One row per mutation, written in the same transaction as the change it describes.
-- AUTOINCREMENT so ids never get reused and "newest first" is "highest id first".
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,     -- principal name, `system` for the platform itself
    actor_token INTEGER,           -- api_tokens.id of the actor, NULL for the platform
    action      TEXT NOT NULL,     -- e.g. device.create, token.revoke
    target      TEXT NOT NULL,     -- what was changed: a device id, token id, profile or tenant
    tenant      TEXT,              -- the tenant the target belongs to, so scoped admins see theirs
    detail      TEXT NOT NULL DEFAULT '{}'  -- JSON object; never holds a secret
) STRICT;

CREATE INDEX audit_tenant ON audit (tenant, id);
