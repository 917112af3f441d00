//! The replication part of a `postgres` check: on a standby, whether its
//! WAL receiver streams and how far replay is behind; on a primary, its
//! standbys and the largest lag; on either, the replication slots and the
//! WAL they hold back (an abandoned slot fills the primary's WAL disk).
//! A temporary slot (pgbackup holds one for each base backup) ends with
//! its session: it is never counted inactive, but what it holds counts.

use std::path::Path;

use opskit::pgconn::describe_pg_error;
use postgres::Client;

use super::Observation;

const REPLICATION: &str = "\
SELECT pg_is_in_recovery(),
       (SELECT coalesce(status, 'hidden') FROM pg_stat_wal_receiver),
       (CASE WHEN pg_is_in_recovery() THEN
          (SELECT coalesce(latest_end_lsn, pg_last_wal_receive_lsn()) - pg_last_wal_replay_lsn()
             FROM pg_stat_wal_receiver)
          ELSE (SELECT max(pg_current_wal_lsn() - replay_lsn) FROM pg_stat_replication)
        END)::float8,
       (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')::int,
       (SELECT count(*) FROM pg_replication_slots)::int,
       (SELECT count(*) FROM pg_replication_slots WHERE NOT active AND NOT temporary)::int,
       (SELECT count(*) FROM pg_replication_slots WHERE wal_status = 'lost')::int,
       h.retained::float8,
       h.slot_name::text,
       (SELECT setting FROM pg_settings WHERE name = 'data_directory')
FROM (SELECT 1) one
LEFT JOIN LATERAL (
  SELECT slot_name,
         (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
               ELSE pg_current_wal_lsn() END) - restart_lsn AS retained
    FROM pg_replication_slots WHERE restart_lsn IS NOT NULL
   ORDER BY 2 DESC NULLS LAST, 1 LIMIT 1) h ON true";

/// What the summary line says about replication, if anything.
pub struct Said(pub Option<String>);

pub fn observe(client: &mut Client, obs: &mut Observation) -> Result<Said, String> {
    let r = client
        .query_one(REPLICATION, &[])
        .map_err(|e| format!("reading replication status: {}", describe_pg_error(&e)))?;
    let standby: bool = r.get(0);
    let lag_bytes = r.get::<_, Option<f64>>(2).map(|b| b.max(0.0) as u64);
    obs.set("replication_lag_bytes", lag_bytes);
    let mut said = None;
    if standby {
        // No row in pg_stat_wal_receiver: no receiver runs at all. A row
        // without its status: the check's role may not see it (only
        // pg_read_all_stats, e.g. pg_monitor, may), so streaming is unknown.
        let status = r
            .get::<_, Option<String>>(1)
            .unwrap_or_else(|| "stopped".into());
        obs.set("wal_receiver_status", status.clone());
        if status == "hidden" {
            said = Some(
                "the WAL receiver's state is hidden from this role (grant it pg_monitor)".into(),
            );
        } else {
            let streaming = status == "streaming";
            obs.set("streaming", streaming);
            if !streaming {
                said = Some(format!("WAL receiver {status}"));
            }
        }
    } else {
        obs.set("streaming_replicas", r.get::<_, i32>(3));
    }
    let slots: i32 = r.get(4);
    obs.set("slots", slots);
    obs.set("inactive_slots", r.get::<_, i32>(5));
    obs.set("lost_slots", r.get::<_, i32>(6));
    let retained = r.get::<_, Option<f64>>(7).map(|b| b.max(0.0) as u64);
    obs.set("slot_retained_bytes", retained);
    obs.set("slot_retained_by", r.get::<_, Option<String>>(8));
    // The WAL disk's free space, when the server's files are on this
    // machine and the check may see them (pg_wal, else the data directory).
    let free = r
        .get::<_, Option<String>>(9)
        .and_then(|d| wal_disk_free(Path::new(&d)));
    obs.set("wal_disk_free_bytes", free);
    obs.set(
        "slot_retained_pct",
        retained.zip(free).map(|(r, f)| share(r, f)),
    );
    let inactive: i32 = r.get(5);
    if inactive > 0 {
        let held = retained.map(opskit::units::format_size).unwrap_or_default();
        said = Some(format!(
            "{}{inactive} of {slots} replication slots inactive (holding up to {held})",
            said.map(|s| format!("{s}, ")).unwrap_or_default()
        ));
    }
    Ok(Said(said))
}

fn wal_disk_free(data: &Path) -> Option<u64> {
    [data.join("pg_wal"), data.to_path_buf()]
        .iter()
        .find_map(|p| opskit::sys::statvfs(p).ok())
        .map(|s| s.avail)
}

/// The share (percent, one decimal) of the space WAL could grow into that
/// the slots already hold: what they hold over that plus what is free.
fn share(retained: u64, free: u64) -> f64 {
    let all = retained.saturating_add(free).max(1) as f64;
    (retained as f64 * 1000.0 / all).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn the_share_of_the_wal_disk_a_slot_holds() {
        assert_eq!(share(0, 100), 0.0);
        assert_eq!(share(25, 75), 25.0);
        assert_eq!(share(1, 2), 33.3);
        assert_eq!(share(10, 0), 100.0);
        assert_eq!(share(0, 0), 0.0);
    }
}
