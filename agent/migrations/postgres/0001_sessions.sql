-- One row per intercepted connection: written when the session opens, updated when it
-- ends. Times are unix milliseconds; ids are lowercase hyphenated UUIDv7 strings, so they
-- sort by creation time. Keep in step with ../sqlite/0001_sessions.sql.
CREATE TABLE sessions (
    -- COLLATE "C": byte order, so `id LIKE 'prefix%'` can use the primary key index.
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    host        TEXT    NOT NULL,           -- gateway host that proxied the session
    started_at  BIGINT  NOT NULL,
    ended_at    BIGINT,                     -- NULL while the session is open
    protocol    TEXT    NOT NULL,
    target      TEXT,                       -- policy target name, if one matched
    client_addr TEXT    NOT NULL,
    orig_dst    TEXT,                       -- where the client meant to connect
    uid         BIGINT,                     -- copy of principal.uid, for filtering
    principal   TEXT,                       -- JSON of identity::Principal
    outcome     TEXT    NOT NULL,           -- open | closed | denied | refused | error
    rule        TEXT,
    reason      TEXT,
    bytes_up    BIGINT  NOT NULL DEFAULT 0,
    bytes_down  BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_uid_started_at ON sessions (uid, started_at);
