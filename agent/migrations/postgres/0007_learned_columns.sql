-- Learned columns (issue 22). See ../sqlite/0007_learned_columns.sql for the columns;
-- keep the two in step.
CREATE TABLE learned_columns (
    target        TEXT    NOT NULL,
    schema_name   TEXT    NOT NULL,
    table_name    TEXT    NOT NULL,
    column_name   TEXT    NOT NULL,
    relid         BIGINT  NOT NULL,
    attnum        BIGINT  NOT NULL,
    type_oid      BIGINT  NOT NULL,
    recognizer    TEXT    NOT NULL,
    learned_by    TEXT    NOT NULL,
    first_session TEXT,
    at_ms         BIGINT  NOT NULL,
    host          TEXT    NOT NULL,
    pinned        BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (target, schema_name, table_name, column_name)
);
