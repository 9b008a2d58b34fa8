-- The share of this database's block reads served from shared buffers since the statistics
-- were last reset (1 before any read).
SELECT current_database() AS database,
       coalesce(blks_hit::float8 / nullif(blks_hit + blks_read, 0), 1) AS hit_ratio
FROM pg_stat_database
WHERE datname = current_database()
