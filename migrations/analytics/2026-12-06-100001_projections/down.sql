DROP TABLE analytics.tasks;
DROP TABLE analytics.connections;
DROP TABLE analytics.tenant_versions;
DROP TABLE analytics.suggestion_days;
DROP TABLE analytics.suggestions;
DROP SCHEMA analytics;
