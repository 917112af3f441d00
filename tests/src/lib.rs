//! What opskit's tests share: a throwaway PostgreSQL cluster ([`pg`]), one
//! that speaks TLS ([`tls`]) with test certificates ([`pki`]), and
//! helpers to run the tool binaries and read their records ([`tools`]),
//! and the procedures of `scripts/` ([`procs`]); age keys ([`age`]); a
//! real S3-compatible server ([`s3`]); minisign keys that sign and check
//! sets ([`signing`]).

pub mod age;
pub mod dashboard;
pub mod drill;
pub mod forge;
pub mod pg;
pub mod pki;
pub mod procs;
pub mod s3;
pub mod sh;
pub mod signing;
pub mod tls;
pub mod tools;
pub mod wal;

pub use pg::{Cluster, TestDb, cluster};
pub use tools::{Output, bin};

/// The tools, as their binaries are named.
pub const TOOLS: [&str; 8] = [
    "pgbackup",
    "verify-backup",
    "prune",
    "healthcheck",
    "migrate",
    "logrotate-lite",
    "offsite",
    "walarchive",
];
