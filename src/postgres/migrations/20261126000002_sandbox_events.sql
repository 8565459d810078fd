-- Every lifecycle event the emitter received, per team, for GET /events/sandboxes (E2B Cloud's
-- lifecycle events API). Kept for events_ttl_days; the payload is the v2 event as received.
CREATE TABLE sandbox_events (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id     uuid        NOT NULL,
    event_id    text        NOT NULL,
    sandbox_id  text        NOT NULL,
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb       NOT NULL,
    -- Both instances of an HA pair, or a re-read stream entry, store an event once.
    UNIQUE (team_id, event_id)
);

CREATE INDEX sandbox_events_team_time ON sandbox_events (team_id, occurred_at, seq);
CREATE INDEX sandbox_events_sandbox_time ON sandbox_events (team_id, sandbox_id, occurred_at, seq);
CREATE INDEX sandbox_events_occurred ON sandbox_events (occurred_at);
