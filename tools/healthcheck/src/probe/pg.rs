//! `postgres://`: connect, `SELECT 1`, and the server's vital signs in one
//! more round trip.

use std::time::Instant;

use opskit::pgconn::{ConnSpec, describe_pg_error};

use super::{Observation, secs};
use crate::spec::Check;

const VITALS: &str = "\
SELECT current_setting('server_version'),
       current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
       current_setting('max_connections')::int,
       (SELECT extract(epoch FROM max(now() - xact_start)) FROM pg_stat_activity
         WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
           AND backend_type = 'client backend')::float8,
       pg_database_size(current_database()),
       (CASE WHEN pg_is_in_recovery() THEN
          CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
               ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END
        ELSE (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication) END)::float8,
       (SELECT count(*) FROM pg_stat_replication)::int,
       current_setting('archive_mode'),
       a.archived_count,
       a.failed_count,
       extract(epoch FROM now() - a.last_archived_time)::float8,
       extract(epoch FROM now() - a.last_failed_time)::float8,
       (CASE WHEN pg_is_in_recovery() THEN NULL
             ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 END),
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'),
       current_setting('summarize_wal', true)
FROM pg_stat_archiver a";

/// The connection a `postgres` target names: a URL, or `postgres:` alone
/// for DATABASE_URL and the PG* variables.
pub fn spec_of(target: &str) -> Result<ConnSpec, String> {
    let url = target.contains("://").then_some(target);
    ConnSpec::resolve(url).map_err(|e| e.msg)
}

pub fn probe(c: &Check) -> Result<Observation, String> {
    let mut spec = spec_of(&c.target)?;
    spec.connect_timeout = c.timeout;
    spec.application_name = Some("opskit-healthcheck".into());
    let start = Instant::now();
    let (mut client, tls) = spec.connect_with_tls_info().map_err(|e| e.msg)?;
    let connect = start.elapsed();
    let t = Instant::now();
    client
        .simple_query("SELECT 1")
        .map_err(|e| format!("SELECT 1 failed: {}", describe_pg_error(&e)))?;
    let query = t.elapsed();
    let r = client
        .query_one(VITALS, &[])
        .map_err(|e| format!("reading server status: {}", describe_pg_error(&e)))?;
    let version: String = r.get(0);
    let in_recovery: bool = r.get(2);
    let conns: i32 = r.get(3);
    let max: i32 = r.get(4);
    let pct = (f64::from(conns) * 1000.0 / f64::from(max.max(1))).round() / 10.0;
    let mut obs = Observation::default();
    obs.set("connect_s", secs(connect));
    obs.set("time_s", secs(query));
    obs.set("version", version.clone());
    obs.set("version_num", r.get::<_, i32>(1));
    obs.set("role", if in_recovery { "replica" } else { "primary" });
    obs.set(
        "replication_lag_s",
        r.get::<_, Option<f64>>(7).map(opskit::record::round_ms),
    );
    obs.set("replicas", r.get::<_, i32>(8));
    obs.set("connections", conns);
    obs.set("max_connections", max);
    obs.set("connections_pct", pct);
    obs.set(
        "oldest_xact_s",
        r.get::<_, Option<f64>>(5).map(opskit::record::round_ms),
    );
    obs.set("db_size_bytes", r.get::<_, i64>(6));
    // WAL archiving (pg_stat_archiver): counts, and how long ago the last
    // segment was archived and the last attempt failed.
    let archive_mode: String = r.get(9);
    obs.set("archive_mode", archive_mode.clone());
    if archive_mode != "off" {
        obs.set("archived_count", r.get::<_, i64>(10));
        obs.set("failed_count", r.get::<_, i64>(11));
        let age = |i| r.get::<_, Option<f64>>(i).map(opskit::record::round_ms);
        obs.set("last_archived_age_s", age(12));
        obs.set("last_failed_age_s", age(13));
        // WAL written so far (primary only) and archive_timeout: with the
        // archive's newest file, they tell a stale archive from an idle server.
        obs.set("wal_bytes", r.get::<_, Option<f64>>(14).map(|b| b as u64));
        obs.set("archive_timeout_s", r.get::<_, i32>(15));
        // Failing now: the last attempt failed after the last success.
        obs.set(
            "archive_failing",
            match (age(12), age(13)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(ok), Some(failed)) => failed < ok,
            },
        );
    }
    // 17+: what incremental base sets need; absent before.
    if let Some(v) = r.get::<_, Option<String>>(16) {
        obs.set("summarize_wal", v == "on");
    }
    let replication = super::replication::observe(&mut client, &mut obs)?;
    obs.set("tls", tls.is_some());
    obs.set("tls_version", tls.as_ref().map(|t| t.version));
    let cert = match &tls {
        Some(t) => Some(super::net::earliest_expiry(&t.chain)?),
        None => None,
    };
    obs.set("cert_days_left", cert.as_ref().map(|c| c.0));
    obs.set("cert_not_after", cert.as_ref().map(|c| c.1.clone()));
    obs.summary = format!(
        "PostgreSQL {version} {} accepting queries (connect {} ms, {conns}/{max} connections{}{})",
        if in_recovery { "replica" } else { "primary" },
        connect.as_millis(),
        match (&tls, &cert) {
            (Some(t), Some((days, ..))) =>
                format!(", {}, certificate expires in {days} days", t.version),
            _ => String::new(),
        },
        replication.0.map(|s| format!("; {s}")).unwrap_or_default()
    );
    Ok(obs)
}
