//! What the results become: `check` records, a Nagios plugin line, and a
//! Prometheus textfile.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use opskit::record::secs;
use opskit::records;
use serde_json::Value;

use crate::run::{Outcome, Status};
use crate::spec::{Check, KindSpec};

pub fn check_record(c: &Check, o: &Outcome) -> records::Check {
    records::Check {
        name: c.name.clone(),
        kind: c.kind,
        target: c.shown.clone(),
        status: o.status,
        ok: o.status == Status::Ok,
        detail: o.detail.clone(),
        values: o.values.clone(),
        conditions: o.conditions.clone(),
        attempts: o.attempts,
        duration_s: secs(o.duration),
    }
}

/// Monitoring-plugins output: `HEALTHCHECK STATUS - text | perfdata`.
pub fn nagios_line(checks: &[Arc<Check>], outs: &[Outcome], worst: Status) -> String {
    let bad: Vec<String> = checks
        .iter()
        .zip(outs)
        .filter(|(_, o)| o.status != Status::Ok)
        .map(|(c, o)| format!("{} {}: {}", c.name, o.status.name(), o.detail))
        .collect();
    let text = if bad.is_empty() {
        let all: Vec<String> = checks
            .iter()
            .zip(outs)
            .map(|(c, o)| format!("{}: {}", c.name, o.detail))
            .collect();
        format!("{} checks OK: {}", checks.len(), all.join("; "))
    } else {
        format!(
            "{} of {} checks not OK: {}",
            bad.len(),
            checks.len(),
            bad.join("; ")
        )
    };
    let mut perf = String::new();
    for (c, o) in checks.iter().zip(outs) {
        let label = sanitize(&c.name);
        let _ = write!(perf, " '{label}_duration'={}s", secs(o.duration));
        for (field, unit) in c.kind.fields() {
            let Some(v) = o.values.get(*field).and_then(Value::as_f64) else {
                continue;
            };
            let uom = match unit {
                crate::expr::Unit::Seconds => "s",
                crate::expr::Unit::Bytes => "B",
                _ if field.ends_with("_pct") => "%",
                _ => "",
            };
            let _ = write!(perf, " '{label}_{field}'={v}{uom}");
        }
    }
    format!(
        "HEALTHCHECK {} - {} |{perf}",
        worst.name(),
        text.replace('|', "/").replace('\n', " ")
    )
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Named metrics for the fields worth graphing and alerting on:
/// (kind, field, metric, help, scale).
const METRICS: &[(&str, &str, &str, &str, f64)] = &[
    (
        "http",
        "status",
        "opskit_http_status_code",
        "HTTP status code of the last response.",
        1.0,
    ),
    (
        "http",
        "time_s",
        "opskit_http_response_seconds",
        "Time to the whole HTTP response.",
        1.0,
    ),
    (
        "postgres",
        "connect_s",
        "opskit_pg_connect_seconds",
        "Time to connect to PostgreSQL.",
        1.0,
    ),
    (
        "postgres",
        "replication_lag_s",
        "opskit_pg_replication_lag_seconds",
        "Replication lag (replica: since the last replayed transaction; primary: the largest replay_lag).",
        1.0,
    ),
    (
        "postgres",
        "replication_lag_bytes",
        "opskit_pg_replication_lag_bytes",
        "WAL not yet replayed (replica: behind what the primary last reported; primary: the standby furthest behind).",
        1.0,
    ),
    (
        "postgres",
        "streaming",
        "opskit_pg_replication_streaming",
        "1 if the standby's WAL receiver streams from its primary (standbys only).",
        1.0,
    ),
    (
        "postgres",
        "replicas",
        "opskit_pg_replicas",
        "Standbys connected to this server (pg_stat_replication).",
        1.0,
    ),
    (
        "postgres",
        "inactive_slots",
        "opskit_pg_replication_slots_inactive",
        "Replication slots nobody is streaming from: they hold WAL back.",
        1.0,
    ),
    (
        "postgres",
        "lost_slots",
        "opskit_pg_replication_slots_lost",
        "Replication slots whose WAL was removed (wal_status lost): their standby must be re-created.",
        1.0,
    ),
    (
        "postgres",
        "slot_retained_bytes",
        "opskit_pg_replication_slot_retained_bytes",
        "WAL the slot furthest behind holds back on this server.",
        1.0,
    ),
    (
        "postgres",
        "slot_retained_pct",
        "opskit_pg_replication_slot_retained_ratio",
        "WAL the slots hold back, as a fraction of that plus the WAL disk's free space.",
        0.01,
    ),
    (
        "postgres",
        "connections_pct",
        "opskit_pg_connections_ratio",
        "Client connections as a fraction of max_connections.",
        0.01,
    ),
    (
        "postgres",
        "oldest_xact_s",
        "opskit_pg_oldest_transaction_seconds",
        "Age of the oldest open transaction.",
        1.0,
    ),
    (
        "postgres",
        "db_size_bytes",
        "opskit_pg_database_size_bytes",
        "Size of the database.",
        1.0,
    ),
    (
        "postgres",
        "cert_days_left",
        "opskit_cert_expiry_seconds",
        "Seconds until the earliest certificate of the chain expires.",
        86_400.0,
    ),
    (
        "tcp",
        "connect_s",
        "opskit_tcp_connect_seconds",
        "Time to open the TCP connection.",
        1.0,
    ),
    (
        "disk",
        "free_bytes",
        "opskit_disk_free_bytes",
        "Bytes available to unprivileged users.",
        1.0,
    ),
    (
        "disk",
        "total_bytes",
        "opskit_disk_size_bytes",
        "Size of the file system.",
        1.0,
    ),
    (
        "disk",
        "free_pct",
        "opskit_disk_free_ratio",
        "Free space as a fraction of the file system.",
        0.01,
    ),
    (
        "disk",
        "inodes_free_pct",
        "opskit_disk_inodes_free_ratio",
        "Free inodes as a fraction of all.",
        0.01,
    ),
    (
        "tls",
        "days_left",
        "opskit_cert_expiry_seconds",
        "Seconds until the earliest certificate of the chain expires.",
        86_400.0,
    ),
    (
        "cert",
        "days_left",
        "opskit_cert_expiry_seconds",
        "Seconds until the earliest certificate of the chain expires.",
        86_400.0,
    ),
    (
        "postgres",
        "last_archived_age_s",
        "opskit_pg_wal_last_archived_age_seconds",
        "Time since the server last archived a WAL file.",
        1.0,
    ),
    (
        "postgres",
        "failed_count",
        "opskit_pg_wal_archive_failed_total",
        "WAL archive attempts that failed since the statistics were reset.",
        1.0,
    ),
    (
        "postgres",
        "archive_failing",
        "opskit_pg_wal_archive_failing",
        "1 if the last WAL archive attempt failed.",
        1.0,
    ),
    (
        "postgres",
        "wal_bytes",
        "opskit_pg_wal_written_bytes",
        "WAL written by the primary so far (its current WAL position).",
        1.0,
    ),
    (
        "postgres",
        "archive_timeout_s",
        "opskit_pg_archive_timeout_seconds",
        "The server's archive_timeout (0: off).",
        1.0,
    ),
    (
        "wal",
        "age_s",
        "opskit_wal_age_seconds",
        "Time since the newest WAL file was archived.",
        1.0,
    ),
    (
        "wal",
        "gaps",
        "opskit_wal_gaps",
        "WAL segments missing from the archive.",
        1.0,
    ),
    (
        "wal",
        "window_age_s",
        "opskit_recovery_window_newest_age_seconds",
        "Age of the newest point in time the backup root recovers to (the last archived transaction).",
        1.0,
    ),
    (
        "wal",
        "window_width_s",
        "opskit_recovery_window_width_seconds",
        "Width of the point-in-time recovery window: from the oldest verified base set's end to the last archived transaction.",
        1.0,
    ),
    (
        "wal",
        "window_overdue_s",
        "opskit_recovery_window_overdue_seconds",
        "How far the newest recoverable point is behind archive_timeout + 5 min (0: on time).",
        1.0,
    ),
    (
        "offsite",
        "age_s",
        "opskit_offsite_age_seconds",
        "Age of the newest complete set in object storage.",
        1.0,
    ),
    (
        "offsite",
        "sets",
        "opskit_offsite_sets",
        "Complete sets in object storage.",
        1.0,
    ),
    (
        "backup",
        "sets",
        "opskit_backup_sets",
        "Complete backup sets in the root.",
        1.0,
    ),
    (
        "backup",
        "age_s",
        "opskit_backup_age_seconds",
        "Age of the newest complete backup set.",
        1.0,
    ),
    (
        "backup",
        "newest_bytes",
        "opskit_backup_size_bytes",
        "Size of the newest complete backup set.",
        1.0,
    ),
    (
        "backup",
        "verified_age_s",
        "opskit_backup_verified_age_seconds",
        "Age of the newest set that passed verification.",
        1.0,
    ),
    (
        "backup",
        "full_verified_age_s",
        "opskit_backup_full_verified_age_seconds",
        "Age of the newest set verified in full (contents read, not only checksums).",
        1.0,
    ),
    (
        "backup",
        "last_verify_ok",
        "opskit_backup_last_verify_ok",
        "1 if the latest verification passed.",
        1.0,
    ),
    (
        "backup",
        "restore_tested_age_s",
        "opskit_restore_test_age_seconds",
        "Time since the latest passed restore test.",
        1.0,
    ),
    (
        "backup",
        "restore_s",
        "opskit_restore_duration_seconds",
        "How long the latest passed restore test took.",
        1.0,
    ),
    (
        "migrations",
        "pending",
        "opskit_migrations_pending",
        "Migrations in the directory not applied to the database.",
        1.0,
    ),
    (
        "migrations",
        "dirty",
        "opskit_migrations_dirty",
        "Migrations left dirty by a failed run.",
        1.0,
    ),
];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_bool().map(|b| if b { 1.0 } else { 0.0 }))
}

/// The results as Prometheus text exposition (node_exporter's textfile
/// collector), every metric with its HELP and TYPE.
pub fn prometheus_text(checks: &[Arc<Check>], outs: &[Outcome], now_unix: f64) -> String {
    let mut families: Vec<(&str, &str, Vec<String>)> = vec![];
    let mut add = |name: &'static str, help: &'static str, sample: String| match families
        .iter_mut()
        .find(|(n, _, _)| *n == name)
    {
        Some(f) => f.2.push(sample),
        None => families.push((name, help, vec![sample])),
    };
    for (c, o) in checks.iter().zip(outs) {
        let labels = format!("check=\"{}\",kind=\"{}\"", label(&c.name), c.kind.name());
        add(
            "opskit_check_status",
            "Check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
            format!("opskit_check_status{{{labels}}} {}", o.status as u8),
        );
        add(
            "opskit_check_ok",
            "1 if the check is OK.",
            format!(
                "opskit_check_ok{{{labels}}} {}",
                u8::from(o.status == Status::Ok)
            ),
        );
        add(
            "opskit_check_duration_seconds",
            "Wall time of the check, retries included.",
            format!(
                "opskit_check_duration_seconds{{{labels}}} {}",
                secs(o.duration)
            ),
        );
        for (kind, field, metric, help, scale) in METRICS {
            if *kind != c.kind.name() {
                continue;
            }
            if let Some(v) = o.values.get(*field).and_then(number) {
                add(metric, help, format!("{metric}{{{labels}}} {}", v * scale));
            }
        }
    }
    add(
        "opskit_healthcheck_last_run_timestamp_seconds",
        "When healthcheck last wrote this file.",
        format!("opskit_healthcheck_last_run_timestamp_seconds {now_unix:.3}"),
    );
    let mut out = String::new();
    for (name, help, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in samples {
            let _ = writeln!(out, "{s}");
        }
    }
    out
}

/// Write the textfile atomically: node_exporter never reads half a file.
pub fn write_prometheus(path: &Path, text: &str) -> opskit::Result<()> {
    opskit::durable::write_file(path, 0o644, text.as_bytes())
}
