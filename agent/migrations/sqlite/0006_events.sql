-- The event log: one row per action a client asked for in a session, of one shape for
-- every protocol (a SQL statement, an SSH command, an HTTP request…): what it was,
-- what the gate decided, and how it went. Rows are hash-chained per session as the
-- statements were: `hash` covers every other column and the `hash` of the event
-- before it (64 zeros before seq 1); the session's `session_closed` audit record
-- carries the count and the last hash under "events". The encoding hashed is
-- described in agent/src/record/events.rs.
--
-- Sessions recorded before this table existed keep their rows in `statements`
-- (their chain and their audit records are not rewritten); they are read as events of
-- kind `sql`. Keep in step with ../postgres/0006_events.sql.
CREATE TABLE events (
    session_id  TEXT    NOT NULL,           -- sessions.id (no foreign key, as statements)
    seq         BIGINT  NOT NULL CHECK (seq > 0),  -- 1, 2, 3… within the session
    at_ms       BIGINT  NOT NULL,           -- unix milliseconds, when the client asked
    kind        TEXT    NOT NULL,           -- sql | connect | exec | shell | file | forward | http
    summary     TEXT    NOT NULL,           -- one line, masked
    details     TEXT,                       -- JSON, the kind's own fields, masked
    verdict     TEXT    NOT NULL,           -- allowed | denied | approved | timed_out | abandoned | error
    decided_by  TEXT,                       -- approvers, or the rule that decided
    request_id  TEXT,                       -- the approval request, when held
    reason      TEXT,
    duration_us BIGINT,
    error       TEXT,
    payload     TEXT,                       -- SHA-256 of a large payload stored beside it
    hash        TEXT    NOT NULL,           -- lowercase hex SHA-256
    PRIMARY KEY (session_id, seq)
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'recorded events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'recorded events are append-only');
END;
