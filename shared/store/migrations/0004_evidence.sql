-- Evidence for a complaint: the raw number of each sender flagged abusive, encrypted with
-- RELOUS_EVIDENCE_KEY (Fernet), kept until the evidence retention ends (`relous purge`).
CREATE TABLE evidence (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    sender TEXT NOT NULL,
    encrypted_number TEXT NOT NULL,
    flagged_at TIMESTAMPTZ NOT NULL,
    reasons TEXT NOT NULL,
    PRIMARY KEY (campaign_id, sender)
);
CREATE INDEX evidence_flagged ON evidence (flagged_at);
