//! A base set (`--physical`): the whole cluster through the real
//! `pg_basebackup`, as one tar stream (`-D - -Ft`) with its
//! `backup_manifest` and the WAL from the backup's start to its end inside
//! (`-X fetch`), compressed, encrypted, hashed and fsynced like any set file.
//! The WAL positions pg_basebackup reports go into the manifest: recovering
//! to a later time needs every archived segment from `start_wal` on.

use std::path::Path;
use std::process::Command;

use opskit::backupset::{FileEntry, FileKind, PhysicalInfo};
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, PgTool};
use opskit::physical::{self, BackupPoints};
use opskit::{Error, Result};
use postgres::Client;

use crate::sink::{Encoding, Sink};

/// How the checkpoint that starts a base backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checkpoint {
    /// At once, with a burst of writes (the backup starts immediately).
    Fast,
    /// Spread over checkpoint_completion_target (gentle, may take minutes).
    Spread,
}

/// The cluster being copied and the pg_basebackup that matches it.
pub struct Cluster {
    pub target: String,
    pub version: String,
    pub version_num: u32,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub superuser: String,
    pub tool: PgTool,
}

impl Cluster {
    pub fn query(client: &mut Client, spec: &ConnSpec, bindir: Option<&Path>) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
                 (SELECT system_identifier::text FROM pg_control_system()), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 (SELECT rolname::text FROM pg_roles WHERE oid = 10)",
                &[],
            )
            .map_err(|e| {
                Error::failure(format!("querying {}: {}", spec.target(), describe_pg_error(&e)))
            })?;
        let version: String = row.get(0);
        let version_num = row.get::<_, i32>(1) as u32;
        let major = pgtools::major_of_num(version_num);
        let tool = pgtools::find("pg_basebackup", major, &version, bindir)?;
        log::info!(
            "copying the cluster at {} (PostgreSQL {version}) with {} {}",
            spec.redacted(),
            tool.path.display(),
            tool.version
        );
        Ok(Cluster {
            target: spec.target(),
            version,
            version_num,
            system_identifier: row.get(2),
            wal_segment_size: row.get::<_, i64>(3) as u64,
            superuser: row.get(4),
            tool,
        })
    }
}

/// Run pg_basebackup into `dir`/base.tar…; the entry and the manifest's
/// physical part.
pub fn base(
    spec: &ConnSpec,
    cluster: &Cluster,
    checkpoint: Checkpoint,
    label: &str,
    dir: &Path,
    enc: &Encoding,
) -> Result<(FileEntry, PhysicalInfo)> {
    let name = format!("base.tar{}", enc.ext());
    let mut cmd = Command::new(&cluster.tool.path);
    spec.configure_child(&mut cmd);
    cmd.args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--verbose",
    ])
    .arg(format!(
        "--checkpoint={}",
        match checkpoint {
            Checkpoint::Fast => "fast",
            Checkpoint::Spread => "spread",
        }
    ))
    .arg(format!("--label={label}"));
    let sink = Sink::create(dir, &name, FileKind::Base, enc)?.with_progress();
    let (entry, lines) = crate::dump::stream_child(cmd, "pg_basebackup", sink)?;
    let points = BackupPoints::from_messages(&lines).ok_or_else(|| {
        Error::failure(format!(
            "pg_basebackup did not report where the backup starts and ends: {}",
            pgtools::summarise(&lines)
        ))
    })?;
    let start = physical::parse_lsn(&points.start_lsn).expect("checked when parsed");
    let info = PhysicalInfo {
        server: cluster.target.clone(),
        server_version: cluster.version.clone(),
        server_version_num: cluster.version_num,
        pg_basebackup_version: cluster.tool.version.clone(),
        system_identifier: cluster.system_identifier.clone(),
        superuser: cluster.superuser.clone(),
        timeline: points.timeline,
        start_wal: physical::wal_file_name(points.timeline, start, cluster.wal_segment_size),
        start_lsn: points.start_lsn,
        end_lsn: points.end_lsn,
        wal_segment_size: cluster.wal_segment_size,
        file: name,
    };
    log::info!(
        "base backup from {} to {} on timeline {} (first WAL needed: {})",
        info.start_lsn,
        info.end_lsn,
        info.timeline,
        info.start_wal
    );
    Ok((entry, info))
}
