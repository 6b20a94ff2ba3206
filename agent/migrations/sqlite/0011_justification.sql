-- Why the requester says they need a held action (issue 20): from the protocol (a SQL
-- comment `/* reason: … */`, `SET portcullis.reason`, an HTTP `Portcullis-Reason`
-- header, SSH `SetEnv PORTCULLIS_REASON`) or later by `portcullis justify ID "…"`.
ALTER TABLE requests ADD COLUMN justification TEXT NULL;
