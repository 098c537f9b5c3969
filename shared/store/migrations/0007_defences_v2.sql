-- Defences v2 (issue 12).

-- Rollups: per campaign, per series and per minute (`minute` = Unix time // 60), the
-- counts the adaptive thresholds are computed from, maintained on the write path: the
-- baselines read these, never the messages. Series: `new_senders` and `inbound` (the
-- campaign's normal traffic: what the abuse rules let through), `spend` (EUR), and
-- `would_stop:RULE` (messages a rule in record mode would have stopped).
CREATE TABLE traffic_rollups (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    series TEXT NOT NULL,
    minute BIGINT NOT NULL,
    value NUMERIC(18, 8) NOT NULL,
    PRIMARY KEY (campaign_id, series, minute)
);

-- Near-duplicate text signals: the MinHash band keys of recent messages (shared/rules/
-- neardup.py); two texts that share a band are near-duplicates. Kept for a day (purged
-- daily by a scan: an index on the age would cost every insert more than it saves).
CREATE TABLE text_bands (
    campaign_id BIGINT NOT NULL,  -- no foreign key: a check per key costs the inbound path
    band TEXT NOT NULL,
    sender TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX text_bands_lookup ON text_bands (campaign_id, band, received_at);

-- Texts that are frequent in a campaign's normal traffic: first contacts the rules let
-- through while the campaign was calm, per day (`day` = Unix time // 86400). A text is
-- usual once enough senders sent it on enough different days; then it is never a raid
-- signal on its own.
CREATE TABLE usual_texts (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    text_key TEXT NOT NULL,
    day BIGINT NOT NULL,
    senders INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, text_key, day)
);

-- Record-only rules: which of them would have stopped this message (comma-separated).
ALTER TABLE inbound_messages ADD COLUMN would_stop TEXT NOT NULL DEFAULT '';

-- The alert webhook's outbox (ALERT_WEBHOOK_URL): one row per event, sent once, retried
-- with back-off until delivered or given up.
CREATE TABLE alerts (
    id {{pk}},
    dedupe_key TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at TIMESTAMPTZ,
    given_up_at TIMESTAMPTZ,
    last_error TEXT
);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
