-- Every delivery attempt, to registered webhooks and configured endpoints alike, for
-- GET /events/webhooks/{id}/deliveries (our extension) and the CLI. Kept as long as the history.
CREATE TABLE delivery_attempts (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    attempted_at timestamptz NOT NULL,
    endpoint     text        NOT NULL,
    event_id     text        NOT NULL,
    sandbox_id   text        NOT NULL,
    event_type   text        NOT NULL,
    attempt      integer     NOT NULL,
    -- delivered, retry (failed, tried again later) or dead (given up).
    outcome      text        NOT NULL,
    status       integer     NULL,
    -- http (an answer other than 2xx), timeout or network; NULL when delivered.
    error_class  text        NULL,
    error        text        NULL,
    duration_ms  bigint      NOT NULL
);

CREATE INDEX delivery_attempts_endpoint ON delivery_attempts (endpoint, attempted_at, seq);
CREATE INDEX delivery_attempts_time ON delivery_attempts (attempted_at);
