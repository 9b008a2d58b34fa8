-- edu_v2, version 9: what the catch-up (`edu-migrate sync`) needs.

-- The source this target was migrated from: a sync from any other source is refused.
ALTER TABLE migration.state
    ADD COLUMN source_system_id text,
    ADD COLUMN source_database text;

-- The staged copy of each legacy table (schema stage) is the catch-up's picture of the source as
-- the target was last derived from it. Stage tables are UNLOGGED: a server crash empties them.
-- Their row counts, recorded here (which is logged), tell a sync whether the picture survived.
CREATE TABLE migration.mirror_state (
    table_name     text PRIMARY KEY,
    rows           bigint NOT NULL,
    staged_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per sync: when, at which as-of time, what changed in the source and what was redone.
CREATE TABLE migration.sync_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    seconds        double precision NOT NULL,
    as_of          timestamptz,
    snapshot_at    timestamptz NOT NULL,
    changed_rows   jsonb NOT NULL,
    recomputed     jsonb NOT NULL,
    whole          boolean NOT NULL DEFAULT false
);

-- A sync deletes and re-derives rows whose dependents keep their ids: the foreign keys are
-- checked when the sync commits, not row by row. Outside a sync they stay immediate.
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
              WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND NOT condeferrable
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I DEFERRABLE INITIALLY IMMEDIATE',
                       fk.tbl, fk.conname);
    END LOOP;
END $$;

-- The as-of time the target was derived at before this sync moved it (none outside a sync), and
-- whether it moved: rows whose outcome depends on it are then derived again.
CREATE FUNCTION migration.previous_as_of() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(current_setting('edu_migrate.previous_as_of', true), '')::timestamptz;

CREATE FUNCTION migration.as_of_moved() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN migration.previous_as_of() IS DISTINCT FROM migration.as_of();

-- A sync is one bulk event of the tool in the audit log, like a migration.
ALTER TABLE audit.log
    DROP CONSTRAINT log_operation_check,
    DROP CONSTRAINT log_check,
    ADD CONSTRAINT log_operation_check
        CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'MIGRATE', 'ROLLBACK', 'SYNC')),
    ADD CONSTRAINT log_check CHECK ((row_id IS NULL) = (operation IN ('MIGRATE', 'ROLLBACK', 'SYNC')));
