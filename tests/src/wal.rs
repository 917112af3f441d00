//! A cluster with `archive_mode = on` (its own, once per test binary): a
//! test points its `archive_command` at walarchive with ALTER SYSTEM.

use std::sync::OnceLock;

use crate::pg::{Cluster, Setup, start_once};

static ARCHIVING: OnceLock<Cluster> = OnceLock::new();
static OUTSIDE: OnceLock<Cluster> = OnceLock::new();

/// The settings of an archiving cluster whose archive_command a test sets.
pub(crate) const ARCHIVING_CONF: &str =
    "wal_level = replica\narchive_mode = on\narchive_command = ''\narchive_timeout = 0\n";

/// The archiving cluster of this test binary, started on first use, with
/// an empty `archive_command` (WAL is kept until one is set).
pub fn archiving_cluster() -> &'static Cluster {
    start_once(&ARCHIVING, || Setup {
        conf: ARCHIVING_CONF.into(),
        ..Setup::default()
    })
}

/// An archiving cluster laid out as Debian and Ubuntu lay theirs out: its
/// `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` in a directory of
/// their own (/etc/postgresql/VERSION/NAME there), so its base sets hold
/// none; `max_prepared_transactions = 3` is set there only (a copy on
/// the defaults has 0).
pub fn outside_conf_cluster() -> &'static Cluster {
    start_once(&OUTSIDE, || Setup {
        conf: ARCHIVING_CONF.into(),
        conf_outside: Some("max_prepared_transactions = 3\n".into()),
        ..Setup::default()
    })
}
