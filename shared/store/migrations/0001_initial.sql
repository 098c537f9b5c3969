-- The pipeline's tables. Written for PostgreSQL; `{{pk}}` becomes the dialect's
-- auto-increment primary key, and SQLite reads the other types by affinity.

CREATE TABLE campaigns (
    id {{pk}},
    number TEXT NOT NULL UNIQUE,
    reply_text TEXT NOT NULL,
    reply_delay_seconds INTEGER NOT NULL DEFAULT 3600,
    reply_window_seconds INTEGER NOT NULL DEFAULT 2592000,
    price_per_segment NUMERIC(12, 5) NOT NULL DEFAULT 0.08,
    allow_multipart BOOLEAN NOT NULL DEFAULT FALSE,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL
);

-- One row per logical inbound SMS. dedup_key is the provider's messageId, or for a
-- concatenated SMS `concat:` + the messageId of its first part: a retried webhook or a
-- redelivered task finds it taken and records nothing twice.
CREATE TABLE inbound_messages (
    id {{pk}},
    dedup_key TEXT NOT NULL UNIQUE,
    campaign_id BIGINT REFERENCES campaigns (id),
    to_number TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    message_type TEXT NOT NULL,
    keyword TEXT NOT NULL DEFAULT '',
    parts INTEGER NOT NULL DEFAULT 1,
    provider_timestamp TIMESTAMPTZ,
    received_at TIMESTAMPTZ NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL DEFAULT ''
);
CREATE INDEX inbound_messages_campaign_sender ON inbound_messages (campaign_id, sender, received_at);

-- Parts of concatenated SMS, kept until every part has arrived.
CREATE TABLE inbound_parts (
    provider_message_id TEXT PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    sender TEXT NOT NULL,
    concat_ref TEXT NOT NULL,
    part INTEGER NOT NULL,
    total INTEGER NOT NULL,
    text TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    inbound_message_id BIGINT REFERENCES inbound_messages (id)
);
CREATE INDEX inbound_parts_pending ON inbound_parts (campaign_id, sender, concat_ref)
    WHERE inbound_message_id IS NULL;

-- One row per sender and campaign: the lock that serialises a sender's messages, and the
-- reply window that allows at most one reply per window.
CREATE TABLE senders (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    sender TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    reply_window_ends_at TIMESTAMPTZ,
    PRIMARY KEY (campaign_id, sender)
);

-- Replies. to_number holds the raw number only while the reply is pending or sending;
-- it is erased when the reply is sent, fails or expires (CONTRACT.md, "Phone numbers").
CREATE TABLE replies (
    id {{pk}},
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    sender TEXT NOT NULL,
    inbound_message_id BIGINT NOT NULL UNIQUE REFERENCES inbound_messages (id),
    to_number TEXT,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    due_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    dispatched_at TIMESTAMPTZ,
    claimed_at TIMESTAMPTZ,
    sent_at TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    segments INTEGER,
    price NUMERIC(14, 8),
    final_price NUMERIC(14, 8),
    error TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX replies_due ON replies (due_at) WHERE status = 'pending';
CREATE INDEX replies_sending ON replies (claimed_at) WHERE status = 'sending';

-- One row per billed part of a sent reply: delivery receipts arrive per part.
CREATE TABLE reply_parts (
    provider_message_id TEXT PRIMARY KEY,
    reply_id BIGINT NOT NULL REFERENCES replies (id),
    price NUMERIC(14, 8),
    status TEXT NOT NULL DEFAULT 'sent',
    err_code INTEGER,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX reply_parts_reply ON reply_parts (reply_id);

CREATE TABLE delivery_receipts (
    id {{pk}},
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    err_code INTEGER NOT NULL,
    price NUMERIC(14, 8),
    client_ref TEXT,
    reply_id BIGINT REFERENCES replies (id),
    received_at TIMESTAMPTZ NOT NULL,
    UNIQUE (provider_message_id, status, err_code)
);
