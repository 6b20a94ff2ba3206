-- One row per statement a client sent in a session (SQL, for now): what it was, what
-- the gate decided, and how it went. Rows are hash-chained per session: `hash` covers
-- every other column and the `hash` of the statement before it (64 zeros before
-- seq 1), and the session's `session_closed` audit record carries the count and the
-- last hash, so `portcullis audit verify` catches an edited, deleted or inserted
-- row. The encoding hashed is described in agent/src/record/statements.rs.
-- Keep in step with ../sqlite/0004_statements.sql.
CREATE TABLE statements (
    session_id    TEXT COLLATE "C" NOT NULL, -- sessions.id (no foreign key: a statement
                                             -- is kept even if its session row is not)
    seq           BIGINT  NOT NULL CHECK (seq > 0),  -- 1, 2, 3… within the session
    at_ms         BIGINT  NOT NULL,         -- unix milliseconds, when the client sent it
    text          TEXT    NOT NULL,         -- the SQL, masked
    params        TEXT,                     -- JSON array of bind parameters, masked
    classes       TEXT    NOT NULL,         -- JSON array: ["read"], ["ddl","drop"]…
    tables        TEXT    NOT NULL,         -- JSON array of table names
    verdict       TEXT    NOT NULL,         -- allowed | denied | approved | timed_out | abandoned | error
    decided_by    TEXT,                     -- approvers, or the rule that decided
    request_id    TEXT,                     -- the approval request, when held
    reason        TEXT,
    duration_us   BIGINT,
    rows_affected BIGINT,
    command_tag   TEXT,                     -- SELECT 3, INSERT 0 1…
    error         TEXT,                     -- SQLSTATE and message
    rows          TEXT,                     -- JSON {"columns", "rows", "truncated"}, masked
    hash          TEXT    NOT NULL,         -- lowercase hex SHA-256
    PRIMARY KEY (session_id, seq)
);

-- Append-only, like the audit log: this stops mistakes, not an attacker who owns the
-- database (the hash chain is what catches those).
CREATE FUNCTION statements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recorded statements are append-only';
END;
$$;

CREATE TRIGGER statements_no_change BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION statements_append_only();

CREATE TRIGGER statements_no_truncate BEFORE TRUNCATE ON statements
    FOR EACH STATEMENT EXECUTE FUNCTION statements_append_only();
