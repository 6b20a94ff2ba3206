-- The audit log: one row per decision or event worth proving later (session opened,
-- closed or denied, approval request created or decided, policy reloaded). Rows are
-- hash-chained: `hash` covers every other column, `prev_hash` is the `hash` of row
-- seq - 1 (64 zeros for seq 1), so editing, deleting or reordering rows shows up in
-- `portcullis audit verify`. The encoding hashed is described in
-- agent/src/record/audit.rs. Keep in step with ../postgres/0003_audit.sql.
CREATE TABLE audit (
    -- 1, 2, 3… with no gaps; INTEGER PRIMARY KEY makes it SQLite's rowid.
    seq         INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
    at          BIGINT  NOT NULL,           -- unix milliseconds, the writer's clock
    host        TEXT    NOT NULL,           -- gateway host that wrote the record
    kind        TEXT    NOT NULL,           -- session_opened, request_decided…
    subject     TEXT    NOT NULL,           -- the session or request id
    actor       TEXT,                       -- who decided: a person, policy, timeout
    data        TEXT    NOT NULL,           -- JSON object, keys sorted, no spaces
    prev_hash   TEXT    NOT NULL,           -- lowercase hex SHA-256
    hash        TEXT    NOT NULL            -- lowercase hex SHA-256
);

CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_subject ON audit (subject);

-- Append-only: the store never changes or removes a record. This stops mistakes, not
-- an attacker who can write the file (the hash chain is what catches those).
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
