-- On a primary, each standby: how far its replay is behind, in seconds and in bytes of WAL.
-- No rows without standbys (and on a standby itself).
SELECT coalesce(nullif(application_name, ''), client_addr::text, 'local') AS standby,
       coalesce(extract(epoch FROM replay_lag), 0) AS replay_lag_seconds,
       CASE WHEN pg_is_in_recovery() THEN 0
            ELSE coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) END
           AS replay_lag_bytes
FROM pg_stat_replication
