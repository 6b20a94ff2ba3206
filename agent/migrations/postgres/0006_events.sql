-- The event log: one row per action a client asked for in a session, of one shape for
-- every protocol. See ../sqlite/0006_events.sql for the columns; keep the two in step.
-- Sessions recorded before this table existed keep their rows in `statements`.
CREATE TABLE events (
    session_id  TEXT    NOT NULL,
    seq         BIGINT  NOT NULL CHECK (seq > 0),
    at_ms       BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    summary     TEXT    NOT NULL,
    details     TEXT,
    verdict     TEXT    NOT NULL,
    decided_by  TEXT,
    request_id  TEXT,
    reason      TEXT,
    duration_us BIGINT,
    error       TEXT,
    payload     TEXT,
    hash        TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recorded events are append-only';
END;
$$;

CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
