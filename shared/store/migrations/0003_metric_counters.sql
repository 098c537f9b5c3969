-- Business counters for /metrics, kept up to date in the same transaction as the event
-- they count, so that any web process reads the same figures with one cheap query.
-- Each process writes its own shard row, so that busy counters do not serialise workers.
CREATE TABLE metric_counters (
    metric TEXT NOT NULL,
    campaign TEXT NOT NULL,
    label TEXT NOT NULL,
    shard INTEGER NOT NULL,
    value NUMERIC(20, 8) NOT NULL DEFAULT 0,
    PRIMARY KEY (metric, campaign, label, shard)
);
