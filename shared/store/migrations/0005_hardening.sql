-- An assembled SMS is unbounded: its text key is stored as a fixed-length hash, never
-- indexed whole (a 2,700-letter text overflowed the btree row limit and blocked its batch).
DROP INDEX inbound_messages_fingerprint;
UPDATE inbound_messages SET fingerprint = {{fingerprint_hash}} WHERE fingerprint <> '';
CREATE INDEX inbound_messages_fingerprint ON inbound_messages (campaign_id, fingerprint, received_at);

-- Dead letters: inbound messages and receipts that could not be recorded. The payload is
-- encrypted with RELOUS_EVIDENCE_KEY (it holds a sender's number); `relous parked` lists,
-- retries and drops them.
CREATE TABLE parked_messages (
    id {{pk}},
    kind TEXT NOT NULL,
    message_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_attempt_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, message_key)
);

-- The money ledger, by construction: `charged` is what the budgets count for a reply (its
-- reservation while it may be sent, then its price), and `charge_delta` the last movement.
-- Both are set by the statement that changes the reply's state (UPDATE … WHERE status = …
-- RETURNING charge_delta), and the budgets move by the returned rows in the same
-- transaction: a reservation is returned or settled once, or not at all.
ALTER TABLE replies ADD COLUMN charged NUMERIC(14, 8) NOT NULL DEFAULT 0;
ALTER TABLE replies ADD COLUMN charge_delta NUMERIC(14, 8) NOT NULL DEFAULT 0;
UPDATE replies SET charged = COALESCE(reserved, 0) WHERE status IN ('claimed', 'sending', 'unknown');
UPDATE replies SET charged = COALESCE(final_price, price, 0) WHERE status IN ('sent', 'delivered');

-- A price above what was reserved halts the campaign's sending until a person resumes it.
ALTER TABLE campaigns ADD COLUMN sending_halted_reason TEXT;
ALTER TABLE campaigns ADD COLUMN sending_halted_at TIMESTAMPTZ;

-- Only a reply that went out (or may have) uses up its sender's window: one given up
-- before sending (expired, refused) reopens the window it opened, if still the current one.
ALTER TABLE replies ADD COLUMN window_ends_at TIMESTAMPTZ;

-- Parts of a concatenated SMS combine only within minutes of each other, by the provider's
-- receive time: a reused 8-bit concat-ref never glues an old orphan to a new message.
ALTER TABLE inbound_parts ADD COLUMN provider_timestamp TIMESTAMPTZ;
CREATE INDEX inbound_parts_unassembled ON inbound_parts (received_at) WHERE inbound_message_id IS NULL;
