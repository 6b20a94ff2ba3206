-- Approvers are local users or identity-provider subjects (identity::Approver), so an
-- approval is keyed by the approver's key (`uid:1000`, `idp:ISSUER#SUBJECT`) instead of
-- a uid. Rows from before keep their uid and get the key `uid:N`; their `identity` is
-- NULL (it was never recorded). The audit log is not touched: its records stay as they
-- were written and keep verifying. Keep in step with ../postgres/0005_approvers.sql.
CREATE TABLE approvals_0005 (
    request_id     TEXT   NOT NULL,
    approver_key   TEXT   NOT NULL,         -- counts an approval once per person
    approver_uid   BIGINT NULL,             -- local approvers only
    approver       TEXT   NOT NULL,         -- one word, as "approved by …" says it
    approver_label TEXT   NOT NULL,         -- alice (uid 1000), alice@example.com (idp)
    identity       TEXT   NULL,             -- JSON of identity::Approver
    at             BIGINT NOT NULL,
    reason         TEXT   NULL,
    PRIMARY KEY (request_id, approver_key)
);

INSERT INTO approvals_0005
    (request_id, approver_key, approver_uid, approver, approver_label, identity, at, reason)
SELECT request_id,
       'uid:' || approver_uid,
       approver_uid,
       approver,
       CASE WHEN approver = 'uid ' || approver_uid THEN approver
            ELSE approver || ' (uid ' || approver_uid || ')' END,
       NULL,
       at,
       reason
FROM approvals;

DROP TABLE approvals;
ALTER TABLE approvals_0005 RENAME TO approvals;

-- A local account linked to an identity-provider identity (by `portcullis login`), so
-- the gate knows them for one person: nobody approves their own request under the
-- other identity.
CREATE TABLE identity_links (
    uid        BIGINT NOT NULL,
    user_name  TEXT   NULL,                 -- the uid's user name when it was linked
    issuer     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,             -- unix milliseconds
    PRIMARY KEY (uid, issuer, subject)
);

CREATE INDEX identity_links_idp ON identity_links (issuer, subject);
