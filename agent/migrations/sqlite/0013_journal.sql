-- How far each gateway's local journal is in the store. Every record is first
-- appended to the journal under the daemon's state_dir (before the client sees the
-- result it records); the recorder then writes records here in batches, and in the
-- same transaction moves its journal's row to the end of the last record written.
-- At start, a daemon replays what its journal holds past this point (what a crash
-- left unwritten). See agent/src/record/journal.rs. Keep in step with the other
-- backend's 0013_journal.sql.
CREATE TABLE journal_positions (
    journal       TEXT   NOT NULL PRIMARY KEY, -- the journal's id (state_dir/journal/id)
    host          TEXT   NOT NULL,             -- the gateway it belongs to
    segment       BIGINT NOT NULL,             -- the segment file of the last record written
    position      BIGINT NOT NULL,             -- the byte after that record in its segment
    updated_at_ms BIGINT NOT NULL
);
