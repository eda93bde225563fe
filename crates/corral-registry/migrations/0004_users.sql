-- People who sign in to the console: a password (argon2id, PHC string) instead of a token, the
-- same roles and tenant scope as API tokens. Sessions are random secrets stored as SHA-256,
-- like tokens, each with the CSRF secret its forms must echo.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    tenant        TEXT REFERENCES tenants(id),
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    password_changed_at INTEGER NOT NULL
);

CREATE TABLE user_sessions (
    hash       TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX user_sessions_by_user ON user_sessions (user_name);
