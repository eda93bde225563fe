-- MQTT clients that are neither devices nor API tokens: a user name, a password (argon2id, PHC
-- string) and topic rules (JSON: [{"pattern": "sensors/%u/#", "access": "readwrite"}]).
CREATE TABLE broker_users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    tenant        TEXT REFERENCES tenants(id),
    rules         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
