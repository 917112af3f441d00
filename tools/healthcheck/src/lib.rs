//! healthcheck: the checks an on-call engineer trusts, with
//! monitoring-plugins exit codes.

mod checksfile;
mod expr;
mod notify;
mod output;
mod probe;
mod run;
mod spec;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::records::{HealthCounts, Notify};
use opskit::{Done, Emitter, Error, Exit, units};

use crate::run::{Outcome, Policy, Status};
use crate::spec::{Check, Def, Defaults, HttpOpts, OneOrMany};

/// Run health checks: HTTP, PostgreSQL, TCP, disk, TLS expiry, backup
/// freshness, pending migrations. All checks run at once, each within
/// --timeout; each gets one `check` record, then a `summary`.
///
/// Targets:
///   http://HOST/PATH, https://...   status (default: 2xx is OK), time_s, body,
///                                   json.PATH, header.NAME, redirects
///   postgres://... (or 'postgres:'  connect_s, time_s, version_num, role,
///     for DATABASE_URL / PG*)       replication_lag_s, connections_pct,
///                                   oldest_xact_s, db_size_bytes, tls,
///                                   tls_version, cert_days_left (over TLS),
///                                   archived_count, failed_count,
///                                   last_archived_age_s, archive_failing,
///                                   wal_bytes, archive_timeout_s,
///                                   summarize_wal (17+: incremental base
///                                   sets need it; warn summarize_wal ==
///                                   false where they are configured),
///                                   replication_lag_bytes; a standby:
///                                   streaming, wal_receiver_status (hidden
///                                   without pg_monitor); a
///                                   primary: replicas, streaming_replicas;
///                                   slots, inactive_slots, lost_slots,
///                                   slot_retained_bytes (WAL the slots hold
///                                   back), slot_retained_by, slot_retained_pct
///                                   (of that plus the WAL disk's free space,
///                                   when the check can see the disk)
///   tcp://HOST:PORT                 connect_s
///   tls://HOST:PORT, cert:FILE.pem  days_left, trusted (tls), not_after
///   disk:PATH                       free_bytes, free_pct, inodes_free_pct
///   backup:ROOT                     age_s, verified_age_s, verified_depth
///                                   (quick: checksums only), full_verified_age_s,
///                                   last_verify_ok, restore_tested_age_s, sets
///   migrations:DIR (with --db)      pending, dirty, applied
///
/// Conditions: FIELD OP VALUE with == != < <= > >= contains !contains =~ !~;
/// durations (300ms, 26h), sizes (10G), `status == 2xx`, `json.x == ok`.
/// A field may carry its kind (disk.free_pct) to apply only to such checks.
///   --expect: must hold, else CRITICAL.  --warn / --crit: WARNING / CRITICAL
///   when it holds. Defaults when none given: http `status == 2xx`;
///   disk warn free_pct < 10, crit < 5; tls/cert warn days_left < 14,
///   crit < 7; postgres warn cert_days_left < 14, streaming == false,
///   replication_lag_s > 5m, inactive_slots > 0, slot_retained_pct > 25,
///   crit cert_days_left < 7, archive_failing == true, replication_lag_s >
///   30m, lost_slots > 0, slot_retained_pct > 50; backup and offsite
///   expect sets > 0, crit age_s > 26h (offsite: warn dated_ahead > 0); wal
///   expect segments > 0, crit gaps > 0; migrations warn pending > 0, crit
///   dirty > 0.
///
/// Examples:
///   healthcheck http://localhost:8000/health --expect 'json.status == ok'
///   healthcheck disk:/var/lib/postgresql --warn 'free_pct < 20' --crit 'free_pct < 10'
///   healthcheck --wait 2m http://localhost:8001/health     # a deploy gate
///   healthcheck --checks /etc/opskit/checks.ndjson --prometheus /var/lib/node_exporter/opskit.prom
///
/// Exit (monitoring-plugins): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a bad
/// check definition or usage); the worst check decides, CRITICAL over UNKNOWN.
#[derive(Debug, Parser)]
#[command(name = "healthcheck", version, verbatim_doc_comment)]
pub struct Args {
    /// What to check (see Targets above).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// A checks file: one JSON object per line or a JSON array ('-': stdin).
    /// Keys: target, name, expect, warn, crit, timeout, headers, method,
    /// follow_redirects, body_limit, insecure, ca, database.
    #[arg(long, value_name = "FILE")]
    pub checks: Option<String>,

    /// A condition that must hold (else CRITICAL); repeatable.
    #[arg(long, value_name = "EXPR")]
    pub expect: Vec<String>,

    /// WARNING when this condition holds; repeatable.
    #[arg(long, value_name = "EXPR")]
    pub warn: Vec<String>,

    /// CRITICAL when this condition holds; repeatable.
    #[arg(long, value_name = "EXPR")]
    pub crit: Vec<String>,

    /// Name of the check (with one TARGET); default: the target.
    #[arg(long)]
    pub name: Option<String>,

    /// Time allowed for each attempt of each check.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::duration_arg)]
    pub timeout: Duration,

    /// HTTP header 'Name: value' to send; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// HTTP method: GET or HEAD.
    #[arg(long, default_value = "GET")]
    pub method: String,

    /// Do not follow HTTP redirects (the 3xx is the result).
    #[arg(long)]
    pub no_follow: bool,

    /// Read at most this much of an HTTP body.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = units::size_arg)]
    pub body_limit: u64,

    /// Also trust the CA certificates in this PEM file (https, tls).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Do not verify HTTPS certificates.
    #[arg(long)]
    pub insecure: bool,

    /// Database of migrations: checks (default: DATABASE_URL).
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,

    /// Checks running at once.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub concurrency: usize,

    /// Retries of a check that is not OK.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// Pause between retries and between --wait rounds.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = units::duration_arg)]
    pub interval: Duration,

    /// Poll until every check is OK or this much time has passed (a gate).
    #[arg(long, value_name = "DURATION", value_parser = units::duration_arg)]
    pub wait: Option<Duration>,

    /// Failures in this first part of the run use up no retry (as Docker's
    /// HEALTHCHECK --start-period).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::duration_arg)]
    pub start_period: Duration,

    /// Print one monitoring-plugins line (`HEALTHCHECK STATUS - text | perfdata`)
    /// instead of records.
    #[arg(long)]
    pub nagios: bool,

    /// Also write the results as a Prometheus textfile, atomically.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,

    /// POST a JSON message (Slack-compatible `text`) here when a check
    /// changes state. The URL often holds a token, and a command line is
    /// readable by every user of the machine (ps): give `env:NAME` to take
    /// the URL from environment variable NAME (e.g. env:OPSKIT_NOTIFY_URL,
    /// as the procedures do).
    #[arg(long, value_name = "URL|env:NAME")]
    pub notify: Option<String>,

    /// With --notify: announce that this systemd unit (or job) failed, with
    /// the detail (e.g. its journal's tail) read from stdin, and run no
    /// check. systemd's OnFailure= notifier uses it.
    #[arg(long, value_name = "UNIT", requires = "notify")]
    pub announce_failure: Option<String>,

    /// Consecutive failed runs before --notify announces a problem.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub notify_after: u32,

    /// Where --notify remembers each check's state between runs.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// Run the tool.
pub fn run(mut args: Args, em: &mut Emitter) -> Result<Done<HealthCounts>, Error> {
    if let Some(var) = args.notify.as_deref().and_then(|n| n.strip_prefix("env:")) {
        let url = std::env::var(var).map_err(|_| {
            Error::usage(format!("--notify env:{var}: the variable {var} is not set"))
        })?;
        args.notify = Some(url);
    }
    if let Some(url) = &args.notify {
        notify::check_url(url)?;
    }
    if let (Some(unit), Some(url)) = (&args.announce_failure, &args.notify) {
        return announce_failure(unit, url, args.timeout, em);
    }
    if args.notify.is_some() && args.state.is_none() {
        return Err(Error::usage(
            "--notify needs --state FILE (to announce changes, not every run)",
        ));
    }
    match checks_of(&args) {
        Ok(checks) => run_checks(&args, checks, em),
        Err(e) if args.nagios => {
            println!("HEALTHCHECK UNKNOWN - {}", e.msg);
            em.mute();
            Ok(Done::new(Exit::Unknown, HealthCounts::default()))
        }
        Err(e) => Err(e),
    }
}

/// The checks the command line and the checks file define.
fn checks_of(args: &Args) -> Result<Vec<Arc<Check>>, Error> {
    let mut headers = vec![];
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| Error::usage(format!("--header '{h}': expected 'Name: value'")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let method = args.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "HEAD") {
        return Err(Error::usage(format!(
            "--method {}: only GET and HEAD",
            args.method
        )));
    }
    let defaults = Defaults {
        timeout: args.timeout,
        http: HttpOpts {
            method,
            headers,
            follow_redirects: !args.no_follow,
            body_limit: args.body_limit,
            insecure: args.insecure,
            ca: args.ca.clone(),
        },
        database: args.db.clone(),
    };
    let mut checks = vec![];
    if let Some(file) = &args.checks {
        let (text, shown) = read_checks_text(file)?;
        checks
            .extend(checksfile::read_checks_file(&text, &shown, &defaults).map_err(Error::usage)?);
    }
    if args.name.is_some() && args.targets.len() != 1 {
        return Err(Error::usage("--name needs exactly one TARGET"));
    }
    for t in &args.targets {
        let def = Def {
            name: args.name.clone(),
            target: t.clone(),
            expect: OneOrMany::Many(args.expect.clone()),
            warn: OneOrMany::Many(args.warn.clone()),
            crit: OneOrMany::Many(args.crit.clone()),
            ..Def::default()
        };
        let c = spec::build(def, &defaults);
        // On the command line a bad definition is a usage error.
        if let Some(why) = &c.invalid {
            return Err(Error::usage(why.clone()));
        }
        checks.push(c);
    }
    if checks.is_empty() {
        return Err(Error::usage(
            "nothing to check: give a TARGET or --checks FILE",
        ));
    }
    distinct_names(&checks)?;
    Ok(checks.into_iter().map(Arc::new).collect())
}

/// The largest checks file read: a thousand checks fit in a tenth of it.
const MAX_CHECKS_FILE: u64 = 1 << 20;

/// The text of `--checks FILE` ('-': stdin) and its name for messages:
/// a regular file (a FIFO or device is refused without blocking) of at
/// most [`MAX_CHECKS_FILE`].
fn read_checks_text(file: &str) -> Result<(String, String), Error> {
    let usage = |e: Error| Error::usage(format!("checks file: {}", e.msg));
    let (bytes, shown) = if file == "-" {
        let shown = "<stdin>";
        let stdin = std::io::stdin().lock();
        let b = opskit::safefs::read_bounded(stdin, Path::new(shown), MAX_CHECKS_FILE);
        (b.map_err(usage)?, shown.to_string())
    } else {
        let b = opskit::safefs::read_regular(Path::new(file), MAX_CHECKS_FILE);
        (b.map_err(usage)?, file.to_string())
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("checks file {shown}: not UTF-8 text")))?;
    Ok((text, shown))
}

/// Every check needs a name of its own (records, metrics and the
/// notification state are keyed by it). When two clash and a definition
/// is bad, what is wrong with it comes first: it is the likelier cause.
fn distinct_names(checks: &[Check]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for c in checks {
        if !seen.insert(&c.name) {
            if let Some(why) = checks.iter().find_map(|c| c.invalid.clone()) {
                return Err(Error::usage(why));
            }
            return Err(Error::usage(format!(
                "two checks are named '{}': give each a distinct name",
                c.name
            )));
        }
    }
    Ok(())
}

fn worst(outs: &[Outcome]) -> Status {
    outs.iter().fold(Status::Ok, |w, o| w.worst(o.status))
}

fn run_checks(
    args: &Args,
    checks: Vec<Arc<Check>>,
    em: &mut Emitter,
) -> Result<Done<HealthCounts>, Error> {
    let start = Instant::now();
    let policy = Policy {
        concurrency: args.concurrency.max(1),
        retries: args.retries,
        interval: args.interval,
        start_period: args.start_period,
    };
    let deadline = args.wait.map(|w| start + w);
    let mut rounds = 0;
    let mut last_report = String::new();
    let outs = loop {
        rounds += 1;
        let outs = run::run_all(&checks, &policy, start);
        let Some(deadline) = deadline else { break outs };
        let now = Instant::now();
        if worst(&outs) == Status::Ok || now >= deadline {
            break outs;
        }
        let report: Vec<String> = checks
            .iter()
            .zip(&outs)
            .filter(|(_, o)| o.status != Status::Ok)
            .map(|(c, o)| format!("{} {} ({})", c.name, o.status.name(), o.detail))
            .collect();
        let report = report.join("; ");
        if report != last_report && start.elapsed() >= args.start_period {
            log::warn!(
                "waiting ({} left): {report}",
                units::format_duration(Duration::from_secs((deadline - now).as_secs()))
            );
            last_report = report;
        }
        std::thread::sleep(args.interval.min(deadline - now));
    };
    let status = worst(&outs);
    if let Some(path) = &args.prometheus {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        output::write_prometheus(path, &output::prometheus_text(&checks, &outs, now))?;
    }
    if args.nagios {
        println!("{}", output::nagios_line(&checks, &outs, status));
        em.mute();
    }
    for (c, o) in checks.iter().zip(&outs) {
        em.emit(&output::check_record(c, o))?;
    }
    if let (Some(url), Some(state)) = (&args.notify, &args.state) {
        notify_changes(url, state, args, &checks, &outs, em)?;
    }
    let count = |s: Status| Some(outs.iter().filter(|o| o.status == s).count());
    Ok(Done::new(
        status.exit(),
        HealthCounts {
            status: Some(status),
            checks: Some(outs.len()),
            ok_checks: count(Status::Ok),
            warning: count(Status::Warning),
            critical: count(Status::Critical),
            unknown: count(Status::Unknown),
            rounds: Some(rounds),
        },
    ))
}

/// Tell the webhook that a unit failed, with stdin as the detail.
fn announce_failure(
    unit: &str,
    url: &str,
    timeout: Duration,
    em: &mut Emitter,
) -> Result<Done<HealthCounts>, Error> {
    let mut detail = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().take(64 << 10), &mut detail)
        .map_err(|e| Error::failure(format!("reading the detail from stdin: {e}")))?;
    let event = notify::Event {
        check: unit.to_string(),
        target: "systemd".into(),
        status: Status::Critical,
        previous: None,
        detail: detail.trim_end().to_string(),
    };
    let res = notify::post(url, &notify::message(std::slice::from_ref(&event)), timeout);
    em.emit(&Notify {
        ok: res.is_ok(),
        url: notify::shown_url(url),
        events: vec![format!("CRITICAL {unit} failed")],
        error: res.as_ref().err().cloned(),
    })?;
    res.map(|()| Done::new(Exit::Ok, HealthCounts::default()))
        .map_err(|e| Error::failure(format!("notifying {}: {e}", notify::shown_url(url))))
}

/// Announce state changes; a failure to notify is a warning, never a
/// changed exit status (the checks' verdict stands).
fn notify_changes(
    url: &str,
    state_file: &std::path::Path,
    args: &Args,
    checks: &[Arc<Check>],
    outs: &[Outcome],
    em: &mut Emitter,
) -> Result<(), Error> {
    let lock_path = state_file.with_extension("lock");
    let _lock = match opskit::lock::acquire(&lock_path, Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("not notifying: {}", e.msg);
            return Ok(());
        }
    };
    let mut state = notify::load(state_file).unwrap_or_else(|e| {
        log::warn!("{e}; starting with a fresh state");
        notify::State::default()
    });
    let events = notify::transitions(&mut state, checks, outs, args.notify_after.max(1));
    let mut sent = None;
    if !events.is_empty() {
        let res = notify::post(url, &notify::message(&events), args.timeout);
        if let Err(e) = &res {
            log::warn!(
                "notification to {} failed: {e}; will retry next run",
                notify::shown_url(url)
            );
            notify::unmark(&mut state, &events);
        }
        sent = Some(res);
    }
    if let Err(e) = notify::save(state_file, &state) {
        log::warn!("{}", e.msg);
    }
    if let Some(res) = sent {
        em.emit(&Notify {
            ok: res.is_ok(),
            url: notify::shown_url(url),
            events: events.iter().map(|e| e.line()).collect(),
            error: res.err(),
        })?;
    }
    Ok(())
}
