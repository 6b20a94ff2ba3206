-- Why the requester says they need a held action (issue 20): from the protocol (a SQL
-- comment `/* reason: … */`, `SET portcullis.reason`, an HTTP `Portcullis-Reason`
-- header, SSH `SetEnv PORTCULLIS_REASON`) or later by `portcullis justify ID "…"`.
ALTER TABLE requests ADD COLUMN justification TEXT NULL;

-- `portcullis login` links a uid to an identity-provider identity for a while (issue
-- 20); NULL keeps a link without end (links made before this column existed).
ALTER TABLE identity_links ADD COLUMN expires_at BIGINT NULL;
