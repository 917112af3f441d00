//! `offsite:s3://BUCKET/PREFIX`: the copies offsite keeps in object
//! storage, listed with the S3 client offsite uses (`opskit-s3`:
//! credentials and endpoint as the AWS tools read them), and what
//! `offsite verify --record` said of them (the root's offsite verdict log).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use opskit::backupset;
use opskit::verdicts::VerdictLog;
use opskit_s3::sets::{RemoteInfo, newest, remote_sets};
use opskit_s3::{Options, Remote, Store};

use super::Observation;
use crate::spec::Check;

pub fn offsite(c: &Check) -> Result<Observation, String> {
    let url = c.target.split_once(':').map(|(_, u)| u).unwrap_or("");
    let remote = Remote::parse(url).map_err(|e| e.msg)?;
    let settings = opskit_s3::aws::from_env().map_err(|e| e.msg)?;
    let path_style = std::env::var("OPSKIT_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
    let store = Store::new(
        remote,
        Options {
            settings,
            path_style,
            ca: None,
            timeout: c.timeout,
        },
    )
    .map_err(|e| e.msg)?;
    let sets = remote_sets(&store).map_err(|e| e.msg)?;
    // A set named as if made more than a day from now is none opskit made
    // (anyone with the bucket's keys can upload one): it would be the
    // newest, 0 s old, for ever. Counted apart and never the newest.
    let now = Utc::now();
    let ahead = |s: &RemoteInfo| s.complete && backupset::dated_ahead(s.time, now);
    let dated_ahead = sets.values().filter(|s| ahead(s)).count();
    let complete = sets.values().filter(|s| s.complete).count() - dated_ahead;
    let newest_set = newest(&sets, |_, s| s.complete && !ahead(s));
    let verdicts = remote_verdicts();
    let verified = newest(&sets, |n, s| {
        s.complete && !ahead(s) && verdicts.get(n) == Some(&true)
    });
    let age = |t: DateTime<Utc>| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0);
    let name = |s: Option<(&str, &RemoteInfo)>| s.map(|(n, _)| n.to_string());
    let age_of = |s: Option<(&str, &RemoteInfo)>| s.map(|(_, i)| age(i.time));
    let mut obs = Observation::default();
    obs.set("sets", complete);
    obs.set("incomplete", sets.len() - complete);
    obs.set("newest", name(newest_set));
    obs.set("age_s", age_of(newest_set));
    obs.set("verified", name(verified));
    obs.set("verified_age_s", age_of(verified));
    obs.set("dated_ahead", dated_ahead);
    obs.summary = match newest_set {
        None => format!("no complete set in {}", store.remote.url("")),
        Some((n, i)) => format!(
            "{complete} sets in {}; newest {n} is {:.1} h old",
            store.remote.url(""),
            age(i.time) / 3600.0
        ),
    };
    if dated_ahead > 0 {
        obs.summary.push_str(&format!(
            "; {dated_ahead} dated more than a day ahead (not opskit's, or a clock is wrong)"
        ));
    }
    Ok(obs)
}

/// The latest verdict of `offsite verify --record` per set, from the log in
/// the local backup root (none without a root; a log that cannot be read
/// is named in a warning and not used).
fn remote_verdicts() -> BTreeMap<String, bool> {
    let Some(root) = std::env::var_os("OPSKIT_BACKUP_ROOT").map(PathBuf::from) else {
        return BTreeMap::new();
    };
    VerdictLog::offsite(&root).passed().unwrap_or_else(|e| {
        log::warn!("{}; its verdicts are not used", e.msg);
        BTreeMap::new()
    })
}
