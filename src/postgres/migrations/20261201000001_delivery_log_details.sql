-- The delivery log as E2B's events API serves it (GET /events/webhooks/{id}/deliveries and
-- /stats): when each attempt started, its event's full type, E2B's error class, the request as
-- sent (URL and headers with secrets redacted) and the answer (headers, the first 4 KiB of the
-- body). Rows logged before keep NULL details and are read with what they have.
ALTER TABLE delivery_attempts
    ADD COLUMN id               uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN started_at       timestamptz,
    ADD COLUMN full_event_type  text,
    -- http_error, dns_error, timeout, transport_error, request_error or canceled; NULL when
    -- delivered. (error_class keeps the coarse http, timeout, network the CLI shows.)
    ADD COLUMN failure_class    text,
    ADD COLUMN request_url      text,
    -- JSON objects (name → value), encoded as text as E2B's document has them.
    ADD COLUMN request_headers  text,
    ADD COLUMN request_body     text,
    ADD COLUMN response_headers text,
    ADD COLUMN response_body    text;

UPDATE delivery_attempts
   SET started_at = attempted_at - duration_ms * interval '1 millisecond',
       full_event_type = CASE event_type
           WHEN 'create' THEN 'sandbox.lifecycle.created'
           WHEN 'kill' THEN 'sandbox.lifecycle.killed'
           WHEN 'pause' THEN 'sandbox.lifecycle.paused'
           WHEN 'resume' THEN 'sandbox.lifecycle.resumed'
           WHEN 'update' THEN 'sandbox.lifecycle.updated'
           WHEN 'checkpoint' THEN 'sandbox.lifecycle.checkpointed'
           ELSE 'sandbox.lifecycle.' || event_type
       END,
       failure_class = CASE error_class
           WHEN 'http' THEN 'http_error'
           WHEN 'timeout' THEN 'timeout'
           WHEN 'network' THEN 'transport_error'
       END;

ALTER TABLE delivery_attempts
    ALTER COLUMN started_at SET NOT NULL,
    ALTER COLUMN full_event_type SET NOT NULL;

-- Pages and the CLI walk an endpoint's attempts by start time (keyset on started_at, seq); the
-- stats read a range of it without touching the table (outcome and duration are in the index).
DROP INDEX delivery_attempts_endpoint;
CREATE INDEX delivery_attempts_endpoint_started
    ON delivery_attempts (endpoint, started_at, seq) INCLUDE (outcome, duration_ms);
-- An event's attempts: whether an attempt is its event's first (a page's groups), and a page's
-- events' every attempt.
CREATE INDEX delivery_attempts_endpoint_event
    ON delivery_attempts (endpoint, event_id, started_at, seq);
