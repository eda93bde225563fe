-- Pre-shared keys for CoAP over DTLS (RFC 7252 §9.1.3.1): the PSK identity is the device id.
-- Unlike tokens the key cannot be stored hashed: the server needs it to run the handshake.
CREATE TABLE device_psks (
    device_id  TEXT PRIMARY KEY REFERENCES devices(id),
    psk        BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
