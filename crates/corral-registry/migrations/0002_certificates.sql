-- Certificate authorities (one or more per tenant) and the device certificates they signed or
-- that were seen on an mTLS connection. Keys are not here: a managed CA's key is a 0600 file in
-- the data directory.
CREATE TABLE certificate_authorities (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    cert_pem    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    managed     INTEGER NOT NULL,          -- 1: Corral holds the key and issues; 0: verify only
    not_after   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    -- Just-in-time registration: the first connection of a device whose certificate this CA
    -- signed creates the device, with this profile and status.
    auto_register    INTEGER NOT NULL DEFAULT 0,
    register_profile TEXT REFERENCES profiles (name),
    register_status  TEXT NOT NULL DEFAULT 'active' CHECK (register_status IN ('active', 'pending-approval'))
);

CREATE TABLE device_certificates (
    fingerprint TEXT PRIMARY KEY,          -- SHA-256 of the DER, hex
    serial      TEXT NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    ca_id       TEXT NOT NULL REFERENCES certificate_authorities(id),
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    issued_by   TEXT NOT NULL,             -- who asked for it, or 'first use' for a CA's own issue
    revoked_at  INTEGER,
    revoked_by  TEXT
);
CREATE INDEX device_certificates_device ON device_certificates(device_id);

-- Just-in-time registration adds a device status: 'pending-approval' (created by its first
-- connection with a certificate, waiting for an operator). SQLite cannot change a CHECK
-- constraint, so the table is rebuilt (foreign keys are off during migrations and checked
-- before the commit).
CREATE TABLE devices_rebuilt (
    id         TEXT PRIMARY KEY,
    profile    TEXT REFERENCES profiles (name),
    tenant     TEXT NOT NULL REFERENCES tenants (id),
    site       TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',   -- JSON object
    tags       TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    status     TEXT NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'quarantined', 'decommissioned', 'pending-approval')),
    gateway    TEXT REFERENCES devices (id),
    last_seen  INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
INSERT INTO devices_rebuilt (id, profile, tenant, site, attributes, tags, status, gateway, last_seen, created_at, updated_at)
    SELECT id, profile, tenant, site, attributes, tags, status, gateway, last_seen, created_at, updated_at FROM devices;
DROP TABLE devices;
ALTER TABLE devices_rebuilt RENAME TO devices;
CREATE INDEX devices_tenant_id ON devices (tenant, id);
CREATE INDEX devices_site ON devices (site);
CREATE INDEX devices_profile ON devices (profile);
CREATE INDEX devices_gateway ON devices (gateway);
