-- analytics' own tables, built from domain events (SB_DOMAIN), in a schema of its own: it never
-- reads another service's (ingest has a table named suggestions too).
CREATE SCHEMA IF NOT EXISTS analytics;

-- Each suggestion as its newest fact described it (the newest updated_at wins).
CREATE TABLE analytics.suggestions (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    estimated_revenue DOUBLE PRECISION NOT NULL,
    confidence_score DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Per tenant and UTC day of creation, by agent type, priority and current status: how many
-- suggestions, their revenue and confidence sums. Every figure of the analytics answer is a sum
-- over these rows (a few thousand for a year, whatever the number of suggestions); a status
-- change moves one suggestion from one cell to another.
CREATE TABLE analytics.suggestion_days (
    tenant_id TEXT NOT NULL,
    day DATE NOT NULL,
    agent_type TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    revenue DOUBLE PRECISION NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant_id, day, agent_type, priority, status)
);

-- The stream sequence of the newest domain event applied per tenant: the version of its figures.
CREATE TABLE analytics.tenant_versions (
    tenant_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- The connection audit, from connection.opened / connection.closed.
CREATE TABLE analytics.connections (
    tenant_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    sub TEXT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
    close_code INTEGER,
    PRIMARY KEY (tenant_id, conn_id)
);
CREATE INDEX connections_page_idx ON analytics.connections (tenant_id, opened_at DESC, conn_id DESC);
CREATE INDEX connections_sub_idx ON analytics.connections (tenant_id, sub, opened_at DESC, conn_id DESC);
CREATE INDEX connections_active_idx ON analytics.connections (tenant_id, opened_at DESC, conn_id DESC)
    WHERE closed_at IS NULL;

-- Tasks as the orchestrator's newest task.* fact described them.
CREATE TABLE analytics.tasks (
    tenant_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    agent TEXT,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    tokens BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, task_id)
);
CREATE INDEX tasks_created_idx ON analytics.tasks (tenant_id, created_at);
CREATE INDEX tasks_running_idx ON analytics.tasks (tenant_id) WHERE status = 'running';
