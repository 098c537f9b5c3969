-- Issue 14 on the embedded default (SQLite has no partitions: its tables stay whole, and
-- `relous purge` erases texts as before). The same store code runs on it, so it gets the
-- same two tables as PostgreSQL (see 0008_partitions.postgresql.sql): the dedup keys, and
-- the evidence messages (always empty here: no month is ever dropped).
-- `inbound_messages.dedup_key` keeps its UNIQUE constraint (SQLite drops one only by
-- rebuilding the table under the foreign keys that reference it): here a key pruned
-- from inbound_dedup is still refused by the table itself.
CREATE TABLE inbound_dedup (
    dedup_key TEXT PRIMARY KEY,
    inbound_message_id BIGINT,
    campaign_id BIGINT REFERENCES campaigns (id),
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX inbound_dedup_received ON inbound_dedup (received_at);

CREATE TABLE evidence_messages (
    id BIGINT PRIMARY KEY,
    campaign_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    provider_timestamp TIMESTAMPTZ,
    text TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL,
    FOREIGN KEY (campaign_id, sender) REFERENCES evidence (campaign_id, sender)
        ON DELETE CASCADE
);
CREATE INDEX evidence_messages_sender ON evidence_messages (campaign_id, sender, received_at);

INSERT INTO inbound_dedup (dedup_key, inbound_message_id, campaign_id, received_at)
SELECT dedup_key, id, campaign_id, received_at FROM inbound_messages;
INSERT INTO inbound_dedup (dedup_key, inbound_message_id, campaign_id, received_at)
SELECT 'part:' || provider_message_id, NULL, campaign_id, received_at FROM inbound_parts;
