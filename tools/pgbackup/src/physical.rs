//! A base set (`--physical`): the whole cluster through the real
//! `pg_basebackup`, as one tar stream (`-D - -Ft`) with its
//! `backup_manifest` and the WAL from the backup's start to its end inside
//! (`-X fetch`), compressed, encrypted, hashed and fsynced like any set file.
//! The WAL positions pg_basebackup reports go into the manifest: recovering
//! to a later time needs every archived segment from `start_wal` on, which
//! verify-backup expects in the root when `archive_mode` (recorded too) was on.

use std::path::Path;
use std::process::Command;

use opskit::backupset::{self, FileEntry, FileKind, Incremental, PhysicalInfo};
use opskit::durable::StagingDir;
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, PgTool};
use opskit::physical::{self, BackupPoints};
use opskit::records::{BackupCounts, FallbackKind};
use opskit::tartap::TarTap;
use opskit::walstore;
use opskit::{Done, Emitter, Error, IoContext, Result};
use postgres::Client;

use crate::finish::NewSet;
use crate::incremental::{self, Parent};
use crate::sink::{Encoding, Sink};
use crate::{Ctx, archive_files, file_name, new_stage};

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
    /// `archive_mode`: whether the server archives its WAL.
    pub archive_mode: String,
    /// The timeline of its latest checkpoint.
    pub timeline: u32,
    /// `summarize_wal` (17+; None before): incremental base sets need it.
    pub summarize_wal: Option<bool>,
    /// A standby (in recovery): the set is read from it, not the primary.
    pub standby: bool,
    pub tool: PgTool,
}

impl Cluster {
    pub fn query(client: &mut Client, spec: &ConnSpec, bindir: Option<&Path>) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
                 (SELECT system_identifier::text FROM pg_control_system()), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                 (SELECT rolname::text FROM pg_roles WHERE oid = 10), \
                 current_setting('archive_mode'), \
                 (SELECT timeline_id FROM pg_control_checkpoint()), \
                 current_setting('summarize_wal', true), \
                 pg_is_in_recovery()",
                &[],
            )
            .map_err(|e| {
                Error::failure(format!("querying {}: {}", spec.target(), describe_pg_error(&e)))
            })?;
        let version: String = row.get(0);
        let version_num = row.get::<_, i32>(1) as u32;
        let major = pgtools::major_of_num(version_num);
        let tool = pgtools::find("pg_basebackup", major, &version, bindir)?;
        let standby: bool = row.get(8);
        log::info!(
            "copying the cluster at {} (PostgreSQL {version}{}) with {} {}",
            spec.redacted(),
            if standby { ", a standby" } else { "" },
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
            archive_mode: row.get(5),
            timeline: row.get::<_, i32>(6) as u32,
            summarize_wal: row.get::<_, Option<String>>(7).map(|v| v == "on"),
            standby,
            tool,
        })
    }
}

/// `--physical`: a base set of the whole cluster, named `<db>-base`.
pub(crate) fn run(ctx: &Ctx, mut client: Client, em: &mut Emitter) -> Result<Done<BackupCounts>> {
    let Ctx {
        args,
        excludes,
        spec,
        root,
        enc,
        signer,
        start,
    } = *ctx;
    let cluster = Cluster::query(&mut client, spec, args.pg_bindir.as_deref())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-base", backupset::sanitize_name(&spec.dbname, "db")));
    let plan = if args.incremental {
        let ask = incremental::Ask {
            root,
            series: &name,
            parent: args.parent.as_deref(),
            fallback_full: args.fallback_full,
            full_every: args.full_every,
        };
        incremental::plan(&ask, &cluster, &mut client)?
    } else {
        incremental::Plan::Full
    };
    hold_wal(&mut client);
    let (parent, mut fallback) = match plan {
        incremental::Plan::Full => (None, None),
        incremental::Plan::Incremental(p) => (Some(p), None),
        incremental::Plan::Fallback(kind, why) => {
            if kind.planned() {
                log::info!("taking a full base set: {why}");
            } else {
                log::warn!("taking a full base set instead of an incremental one: {why}");
            }
            (None, Some((kind, why)))
        }
    };
    let (mut started_at, mut stage) = new_stage(root, &name)?;
    let take = |stage: &StagingDir, parent: Option<&Parent>| {
        let label = file_name(stage.dest());
        base(
            spec,
            &cluster,
            args.checkpoint,
            &label,
            stage.path(),
            enc,
            parent,
        )
    };
    let (mut entries, info) = match take(&stage, parent.as_ref()) {
        // The server cannot send the changes since the parent (its WAL
        // summaries do not cover them): a full set, saying why.
        Err(e) if parent.is_some() && e.msg.contains("WAL summar") => {
            log::warn!(
                "taking a full base set instead of an incremental one: {}",
                e.msg
            );
            fallback = Some((FallbackKind::SummariesGone, e.msg));
            drop(stage);
            (started_at, stage) = new_stage(root, &name)?;
            take(&stage, None)?
        }
        done => done?,
    };
    wait_archived(&mut client, &cluster, &info);
    archive_files(args, excludes, &mut entries, stage.path(), enc)?;
    let set = NewSet {
        stage,
        name,
        started_at,
        start,
        signer,
        fallback,
    };
    set.finish(None, Some(info), enc, entries, em)
}

/// How long a base set waits for the server to archive its last segment.
const ARCHIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Wait until the primary that archives its WAL has archived the segment
/// the backup ended in: recovering to any later time starts from the
/// archive, and the verification that follows a nightly base set checks
/// that the archive holds the set's WAL. pg_basebackup does not wait (it
/// carries the WAL the set needs to be consistent). Past a minute this is a
/// warning naming the segment and how far archiving got; the set is kept.
fn wait_archived(client: &mut Client, cluster: &Cluster, info: &PhysicalInfo) {
    // A standby cannot switch segments: the one its backup ended in is
    // archived when the primary fills or switches it (archive_timeout),
    // which may be long after; it is not waited for.
    let archives = cluster.archive_mode != "off" && !cluster.standby;
    let Some(end) = physical::parse_lsn(&info.end_lsn) else {
        return;
    };
    // archive_mode on with neither a command nor a library archives
    // nothing (the server keeps the WAL): there is nothing to wait for.
    let configured = client
        .query_one(
            "SELECT current_setting('archive_command') <> '' \
                 OR coalesce(current_setting('archive_library', true), '') <> ''",
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    if !archives || !configured {
        return;
    }
    let want = walstore::wal_file_name(info.timeline, end, info.wal_segment_size);
    let deadline = std::time::Instant::now() + ARCHIVE_WAIT;
    loop {
        match client.query_one(
            "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            &[],
        ) {
            Ok(r) => {
                let last: String = r.get(0);
                // Segment names of one timeline, or a later one, sort in order.
                if last.len() >= 24 && last[..24] >= *want.as_str() {
                    return;
                }
                let failed: String = r.get(1);
                if std::time::Instant::now() > deadline {
                    log::warn!(
                        "the server has not archived {want}, where this base set ends, after {} s (last archived: {}{}): recovery past the set's end and its verification need it in the archive",
                        ARCHIVE_WAIT.as_secs(),
                        if last.is_empty() { "none" } else { &last },
                        if failed.is_empty() { String::new() } else { format!("; last failure: {failed}") }
                    );
                    return;
                }
            }
            Err(e) => {
                log::warn!("cannot see whether {want} is archived: {}", describe_pg_error(&e));
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Keep every WAL file from now on for as long as `client`'s session
/// lives (to the end of the run), with a temporary replication slot: a
/// tar on stdout cannot stream its WAL (`-X fetch`), so pg_basebackup
/// fetches it at the end, and checkpoints during a long backup on a busy
/// server would otherwise recycle segments it still needs. Without a free
/// slot the backup goes on, guarded only by `wal_keep_size`.
fn hold_wal(client: &mut Client) {
    let slot = format!("opskit_base_{}", std::process::id());
    if let Err(e) = client.execute(
        "SELECT pg_create_physical_replication_slot($1, true, true)",
        &[&slot],
    ) {
        log::warn!(
            "cannot hold the backup's WAL with a temporary replication slot ({}): a checkpoint during the backup may remove WAL it has yet to fetch unless wal_keep_size covers it",
            describe_pg_error(&e)
        );
    }
}

/// Run pg_basebackup into `dir`/base.tar… (incremental to `parent` when
/// given), its `backup_manifest` also kept plain beside it; the set's
/// entries and the manifest's physical part.
pub fn base(
    spec: &ConnSpec,
    cluster: &Cluster,
    checkpoint: Checkpoint,
    label: &str,
    dir: &Path,
    enc: &Encoding,
    parent: Option<&Parent>,
) -> Result<(Vec<FileEntry>, PhysicalInfo)> {
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
    // The parent's backup_manifest, checked, for pg_basebackup to send;
    // in the staging directory only while it runs.
    let parent_copy = dir.join(".parent.backup_manifest");
    if let Some(p) = parent {
        p.copy_manifest(&parent_copy)?;
        cmd.arg(format!("--incremental={}", parent_copy.display()));
    }
    let sink = Sink::create(dir, &name, FileKind::Base, enc)?.with_progress();
    let plain = Encoding {
        compression: opskit::codec::Compression {
            codec: None,
            ..enc.compression
        },
        seal: None,
    };
    let kept = Sink::create(
        dir,
        physical::BACKUP_MANIFEST,
        FileKind::BackupManifest,
        &plain,
    )?;
    let mut tap = TarTap::new(physical::BACKUP_MANIFEST, kept);
    let (entry, lines) =
        crate::dump::stream_child_watched(cmd, "pg_basebackup", sink, &mut |b| tap.feed(b))?;
    if parent.is_some() {
        std::fs::remove_file(&parent_copy).at("removing", &parent_copy)?;
    }
    let kept = tap.finish().ok_or_else(|| {
        Error::failure(format!(
            "pg_basebackup's tar held no whole {}",
            physical::BACKUP_MANIFEST
        ))
    })?;
    let entries = vec![entry, kept.finish()?];
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
        start_wal: walstore::wal_file_name(points.timeline, start, cluster.wal_segment_size),
        start_lsn: points.start_lsn,
        end_lsn: points.end_lsn,
        wal_segment_size: cluster.wal_segment_size,
        file: name,
        archive_mode: Some(cluster.archive_mode.clone()),
        source: Some(
            if cluster.standby {
                "standby"
            } else {
                "primary"
            }
            .into(),
        ),
        incremental: parent.map(|p| Incremental {
            parent: p.name.clone(),
            chain: p.chain.clone(),
        }),
    };
    log::info!(
        "base backup from {} to {} on timeline {} (first WAL needed: {})",
        info.start_lsn,
        info.end_lsn,
        info.timeline,
        info.start_wal
    );
    Ok((entries, info))
}
