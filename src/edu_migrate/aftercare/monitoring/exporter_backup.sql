-- The newest verified backup of this database (restored into a scratch database and counted),
-- as `edu-migrate backup` records each entry of its manifest in migration.run_log: its time as
-- a Unix time, 0 when there is none.
SELECT current_database() AS database,
       coalesce(max(extract(epoch FROM (detail ->> 'created_at')::timestamptz)), 0)
           AS last_verified_timestamp_seconds
FROM migration.run_log
WHERE event = 'backup' AND detail ->> 'verified' = 'restored'
  AND detail ->> 'database' = current_database()
