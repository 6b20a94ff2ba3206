-- Approvers are local users or identity-provider subjects (identity::Approver), so an
-- approval is keyed by the approver's key (`uid:1000`, `idp:ISSUER#SUBJECT`) instead of
-- a uid. Rows from before keep their uid and get the key `uid:N`; their `identity` is
-- NULL (it was never recorded). The audit log is not touched: its records stay as they
-- were written and keep verifying. Keep in step with ../sqlite/0005_approvers.sql.
ALTER TABLE approvals
    ADD COLUMN approver_key TEXT NULL,          -- counts an approval once per person
    ADD COLUMN approver_label TEXT NULL,        -- alice (uid 1000), alice@example.com (idp)
    ADD COLUMN identity TEXT NULL;              -- JSON of identity::Approver

UPDATE approvals SET
    approver_key = 'uid:' || approver_uid::text,
    approver_label = CASE WHEN approver = 'uid ' || approver_uid::text THEN approver
                          ELSE approver || ' (uid ' || approver_uid::text || ')' END;

-- In this order: a column of the primary key cannot become nullable.
ALTER TABLE approvals DROP CONSTRAINT approvals_pkey;
ALTER TABLE approvals
    ALTER COLUMN approver_key SET NOT NULL,
    ALTER COLUMN approver_label SET NOT NULL,
    ALTER COLUMN approver_uid DROP NOT NULL;    -- local approvers only
ALTER TABLE approvals ADD PRIMARY KEY (request_id, approver_key);

-- A local account linked to an identity-provider identity (by `portcullis login`), so
-- the gate knows them for one person: nobody approves their own request under the
-- other identity.
CREATE TABLE identity_links (
    uid BIGINT NOT NULL,
    user_name TEXT NULL,                        -- the uid's user name when it was linked
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL,                 -- unix milliseconds
    PRIMARY KEY (uid, issuer, subject)
);

CREATE INDEX identity_links_idp ON identity_links (issuer, subject);
