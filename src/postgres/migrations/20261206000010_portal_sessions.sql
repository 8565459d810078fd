-- Sessions of the team portal (/portal/): who signed in with which API key, until when. Only a
-- SHA-256 of the session id is kept (a dump gives no usable cookie), and the key's hash as E2B
-- stores it (so deleting the key, or blocking the team, ends its sessions); never the key.
CREATE TABLE portal_sessions (
    id_hash      bytea       PRIMARY KEY,
    team_id      uuid        NOT NULL,
    api_key_hash text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX portal_sessions_expires_at ON portal_sessions (expires_at);
