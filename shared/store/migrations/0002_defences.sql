-- Defences: abuse rules, storm mode, budget guard, shared send rate, sender lists.

-- Knobs of the abuse rules, as JSON (shared.abuse.CampaignRules; absent keys take defaults).
ALTER TABLE campaigns ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
ALTER TABLE campaigns ADD COLUMN storm_mode BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE campaigns ADD COLUMN storm_changed_at TIMESTAMPTZ;
-- Highest price per segment the provider ever reported: estimates never go below it.
ALTER TABLE campaigns ADD COLUMN observed_price_per_segment NUMERIC(14, 8) NOT NULL DEFAULT 0;

-- One row per campaign: caps (NULL = none) and what is used in the current hour, day and
-- in total. "Used" counts reservations of replies being sent plus settled spend; it only
-- grows through a conditional UPDATE that checks every cap, so concurrent senders cannot
-- overshoot.
CREATE TABLE budgets (
    campaign_id BIGINT PRIMARY KEY REFERENCES campaigns (id),
    hourly_cap NUMERIC(14, 8),
    daily_cap NUMERIC(14, 8),
    total_cap NUMERIC(14, 8),
    hour_start TIMESTAMPTZ NOT NULL,
    hour_used NUMERIC(14, 8) NOT NULL DEFAULT 0,
    day_start TIMESTAMPTZ NOT NULL,
    day_used NUMERIC(14, 8) NOT NULL DEFAULT 0,
    total_used NUMERIC(14, 8) NOT NULL DEFAULT 0,
    spent NUMERIC(14, 8) NOT NULL DEFAULT 0
);

ALTER TABLE replies ADD COLUMN reserved NUMERIC(14, 8);
ALTER TABLE replies ADD COLUMN reserved_hour TIMESTAMPTZ;
ALTER TABLE replies ADD COLUMN reserved_day TIMESTAMPTZ;
ALTER TABLE replies ADD COLUMN expires_at TIMESTAMPTZ;
CREATE INDEX replies_claimed ON replies (claimed_at) WHERE status = 'claimed';

-- The account's send rate, shared by every worker process (a token bucket).
CREATE TABLE rate_buckets (
    name TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- What the abuse rules look at.
ALTER TABLE inbound_messages ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE inbound_messages ADD COLUMN score INTEGER NOT NULL DEFAULT 0;
CREATE INDEX inbound_messages_fingerprint ON inbound_messages (campaign_id, fingerprint, received_at);
CREATE INDEX inbound_messages_received ON inbound_messages (campaign_id, received_at);
ALTER TABLE senders ADD COLUMN prefix_group TEXT NOT NULL DEFAULT '';
ALTER TABLE senders ADD COLUMN blocked_until TIMESTAMPTZ;
CREATE INDEX senders_first_seen ON senders (campaign_id, first_seen_at);
CREATE INDEX senders_prefix ON senders (campaign_id, prefix_group, first_seen_at);

-- Operators' lists, by pseudonym: `allow` beats every abuse rule, `block` silences.
CREATE TABLE sender_lists (
    sender TEXT PRIMARY KEY,
    list TEXT NOT NULL CHECK (list IN ('allow', 'block')),
    created_at TIMESTAMPTZ NOT NULL
);
