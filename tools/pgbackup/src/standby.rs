//! Dumps read from a hot standby. Replay may need what a long dump holds
//! (a table it has locked, rows its snapshot still sees) and, after
//! `max_standby_streaming_delay`, cancels the dump's query or ends its
//! session. A cancelled query says "conflict with recovery"; an ended idle
//! session often reaches pg_dump only as "server closed the connection
//! unexpectedly". The server counts every conflict it resolves in
//! `pg_stat_database_conflicts`: a count that grew while the dump ran
//! names the cause, whatever pg_dump saw.

use std::time::Duration;

use opskit::Error;
use opskit::pgconn::ConnSpec;
use opskit::pgtools::{RECOVERY_CONFLICT_HINT, recovery_conflict_hint};
use postgres::Client;

const CONFLICTS: &str = "\
SELECT confl_tablespace + confl_lock + confl_snapshot + confl_bufferpin + confl_deadlock
  FROM pg_stat_database_conflicts WHERE datname = current_database()";

/// The recovery conflicts of the database before the dump, on a standby.
pub struct Conflicts(i64);

impl Conflicts {
    /// None on a primary (or when the counts cannot be read).
    pub fn before(client: &mut Client) -> Option<Conflicts> {
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .ok()?
            .get(0);
        if !standby {
            return None;
        }
        log::info!(
            "the server is a standby: a long dump can be cancelled by replay (hot_standby_feedback, max_standby_streaming_delay)"
        );
        Some(Conflicts(count(client)?))
    }

    /// `e`, with the cause and the remedy when replay ended the dump.
    pub fn explain(&self, spec: &ConnSpec, e: Error) -> Error {
        if recovery_conflict_hint(&e.msg).is_some() {
            return e;
        }
        // A session ended by replay counts its conflict as it exits.
        for _ in 0..20 {
            let grew = spec
                .connect()
                .ok()
                .and_then(|mut c| count(&mut c))
                .is_some_and(|n| n > self.0);
            if grew {
                return Error::new(e.exit, format!("{}: {RECOVERY_CONFLICT_HINT}", e.msg));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }
}

fn count(client: &mut Client) -> Option<i64> {
    client.query_opt(CONFLICTS, &[]).ok()?.map(|r| r.get(0))
}
