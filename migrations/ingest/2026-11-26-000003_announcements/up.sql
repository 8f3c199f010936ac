-- The outbox of suggestion announcements: written in the transaction that
-- changes a suggestion, published to JetStream right after the commit, and
-- retried by the background loop when that publish did not happen (NATS down,
-- process stopped), so every stored change reaches the rooms.
CREATE TABLE announcements (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- suggestion.created or suggestion.updated
    event         TEXT NOT NULL,
    -- What the event ids derive from (the suggestion or response id), so a
    -- retried publish is deduplicated by JetStream.
    key           TEXT NOT NULL,
    data          JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX announcements_pending_idx ON announcements (created_at) WHERE published_at IS NULL;
