-- Learned columns (issue 22): table columns of a target where a masking recognizer
-- found personal data, in a result (`results`) or a sample (`discover`). Every gateway
-- sharing the store masks them whole, as `mask_columns` entries, in the sessions of
-- rules that learn. A column is named by schema, table and column (which survive
-- sessions and restarts); the OID, attribute number and type seen when it was learned
-- tell a dropped or retyped column, which is forgotten and learned again. `pinned`
-- rows are never forgotten. Changes are in the audit log (`column_learned`,
-- `column_forgotten`, `column_pinned`, `column_unpinned`).
-- Keep in step with ../postgres/0007_learned_columns.sql.
CREATE TABLE learned_columns (
    target        TEXT    NOT NULL,
    schema_name   TEXT    NOT NULL,
    table_name    TEXT    NOT NULL,
    column_name   TEXT    NOT NULL,
    relid         BIGINT  NOT NULL,          -- pg_class OID when learned
    attnum        BIGINT  NOT NULL,
    type_oid      BIGINT  NOT NULL,          -- as RowDescription showed it
    recognizer    TEXT    NOT NULL,          -- email | credit_card | … | regex:NAME
    learned_by    TEXT    NOT NULL,          -- results | discover
    first_session TEXT,                      -- sessions.id that taught it
    at_ms         BIGINT  NOT NULL,          -- unix milliseconds
    host          TEXT    NOT NULL,          -- the gateway that learned it
    pinned        BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (target, schema_name, table_name, column_name)
);
