-- Suggestions from agents, the responses users gave them, per-user
-- notification preferences, and notifications (held ones wait here for the
-- end of their user's quiet hours, across restarts).
CREATE TABLE suggestions (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id           TEXT NOT NULL,
    agent_type         TEXT NOT NULL,
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    estimated_revenue  DOUBLE PRECISION NOT NULL CHECK (estimated_revenue >= 0),
    confidence_score   DOUBLE PRECISION NOT NULL CHECK (confidence_score BETWEEN 0 AND 1),
    priority           TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    user_id            TEXT,
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'executed', 'rejected', 'paused')),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
-- Lists are newest first with keyset pagination on (created_at, id); one
-- index per filter keeps every filtered page an index range scan.
CREATE INDEX suggestions_page_idx ON suggestions (tenant_id, created_at DESC, id DESC);
CREATE INDEX suggestions_status_idx ON suggestions (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX suggestions_agent_idx ON suggestions (tenant_id, agent_type, created_at DESC, id DESC);
CREATE INDEX suggestions_priority_idx ON suggestions (tenant_id, priority, created_at DESC, id DESC);
CREATE INDEX suggestions_user_idx ON suggestions (tenant_id, user_id, created_at DESC, id DESC)
    WHERE user_id IS NOT NULL;

CREATE TABLE suggestion_responses (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    suggestion_id  TEXT NOT NULL REFERENCES suggestions (id) ON DELETE CASCADE,
    action         TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    note           TEXT,
    from_status    TEXT NOT NULL,
    to_status      TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX suggestion_responses_suggestion_idx ON suggestion_responses (suggestion_id, created_at);

CREATE TABLE notification_preferences (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    preferences  JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE notifications (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    message       TEXT NOT NULL,
    severity      TEXT NOT NULL,
    data          JSONB NOT NULL,
    -- Whether quiet hours held it; shown to the user as `held`.
    held          BOOLEAN NOT NULL,
    -- Sent as a live event at all (the user's channels include websocket).
    live          BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    deliver_at    TIMESTAMPTZ NOT NULL,
    delivered_at  TIMESTAMPTZ
);
-- The delivery loop's queue: undelivered notifications by when they are due.
CREATE INDEX notifications_due_idx ON notifications (deliver_at) WHERE delivered_at IS NULL;
CREATE INDEX notifications_user_idx ON notifications (tenant_id, user_id, created_at DESC);
