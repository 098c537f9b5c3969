-- The kill switch for every campaign at once (`relous sending stop` without --campaign):
-- one row while sending is stopped everywhere. A campaign's own stop is its
-- `campaigns.sending_halted_reason`. Only a person lifts either (`relous sending start`).
CREATE TABLE sending_halts (
    scope TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    halted_at TIMESTAMPTZ NOT NULL
);
