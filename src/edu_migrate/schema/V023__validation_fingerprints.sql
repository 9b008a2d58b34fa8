-- edu_v2, version 23: what a full validation established, kept so that the cutover's window
-- validates only what was written since (docs/engine.md, "Validation that grows with the delta").
--
-- A full validation stores, per range of 64 legacy ids of the large legacy tables, the target's
-- side of their accounting (crosswalk, rows set aside, merges), and the orphan counts of the
-- large edu_v2 tables per bucket of their ids. From then on, statement triggers (created by that
-- validation, removed by the next full run) note every key written in the tables those numbers
-- read. A validation in the window recomputes the noted ranges and buckets only and adds the
-- stored rest: the same checks, the same numbers. When the baseline is missing, was left
-- unfinished, or its triggers are not the ones it recorded (dropped, replaced, disabled), the
-- window validates in full and says why.

-- The one baseline. state: 'building' while a full validation computes it (writes are already
-- noted), 'ready' once stored, 'invalid' when something wrote that the notes cannot follow (a
-- TRUNCATE: a full run or a rollback).
CREATE TABLE migration.validation_baseline (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    state          text NOT NULL CHECK (state IN ('building', 'ready', 'invalid')),
    reason         text,
    established_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the bits of the id buckets per edu_v2 table, the row counts at the baseline, and the
    -- triggers that note writes: {"name": [oid, xmin]}, compared before the baseline is used
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Per legacy table and range of ids (source_id >> 6): the accounting's target side.
CREATE TABLE migration.validation_ranges (
    legacy_table   text NOT NULL,
    bucket         bigint NOT NULL,
    migrated       bigint NOT NULL,
    set_aside      bigint NOT NULL,
    both_ways      bigint NOT NULL,
    merged         bigint NOT NULL,
    ids            bigint NOT NULL,
    id_sum         numeric NOT NULL,
    id_hash_sum    numeric NOT NULL,
    PRIMARY KEY (legacy_table, bucket)
);

-- Per orphan check and bucket of the child table's ids: the orphans found (buckets with none
-- are not stored).
CREATE TABLE migration.validation_orphans (
    check_name     text NOT NULL,
    bucket         bigint NOT NULL,
    orphans        bigint NOT NULL,
    PRIMARY KEY (check_name, bucket)
);

-- The ranges of legacy ids written since the baseline (crosswalk, rows set aside, repairs).
CREATE TABLE migration.validation_touched_ranges (
    legacy_table   text NOT NULL,
    bucket         bigint NOT NULL,
    PRIMARY KEY (legacy_table, bucket)
);

-- The edu_v2 rows written since the baseline, by id, and whether the id existed at the
-- baseline (known from the first write that touched it: a delete or an update saw it, an insert
-- did not).
CREATE TABLE migration.validation_touched_keys (
    relation       text NOT NULL,
    id             uuid NOT NULL,
    existed_before boolean NOT NULL,
    PRIMARY KEY (relation, id)
);

-- Notes the legacy ranges a statement wrote in the crosswalk, rejected_rows or repairs. Runs as
-- the schema's owner: an application role that writes those tables needs no right on the notes.
CREATE FUNCTION migration.note_legacy_ranges() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM migration.validation_baseline
                   WHERE state IN ('building', 'ready')) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE migration.validation_baseline SET state = 'invalid',
            reason = format('%s was truncated', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO migration.validation_touched_ranges
        SELECT DISTINCT source_table, source_id >> 6 FROM old_rows
        WHERE source_table IN ('course_students', 'grades')
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO migration.validation_touched_ranges
        SELECT DISTINCT source_table, source_id >> 6 FROM new_rows
        WHERE source_table IN ('course_students', 'grades')
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

-- Notes the ids a statement wrote in an edu_v2 table whose rows or whose parents' rows an
-- orphan check or a count reads.
CREATE FUNCTION migration.note_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM migration.validation_baseline
                   WHERE state IN ('building', 'ready')) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE migration.validation_baseline SET state = 'invalid',
            reason = format('%s was truncated', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    -- The first write to touch an id tells whether it existed at the baseline: later writes to
    -- the same id leave the note as it is.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO migration.validation_touched_keys
        SELECT DISTINCT TG_TABLE_NAME, id, true FROM old_rows
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO migration.validation_touched_keys
        SELECT DISTINCT TG_TABLE_NAME, id, false FROM new_rows
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
