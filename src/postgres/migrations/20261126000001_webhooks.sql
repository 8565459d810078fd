-- Webhooks a team registered through /events/webhooks (E2B Cloud's API). No foreign key to
-- public.teams: the emitter only reads E2B's tables (REFERENCES would need a grant on them).
CREATE TABLE webhooks (
    id               uuid        PRIMARY KEY,
    team_id          uuid        NOT NULL,
    name             text        NOT NULL,
    url              text        NOT NULL,
    enabled          boolean     NOT NULL,
    events           text[]      NOT NULL,
    -- Needed in clear to sign deliveries; never returned by the API.
    signature_secret text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_team_id ON webhooks (team_id, created_at);
