//! One directive applied to a block's options, grouped as logrotate's
//! manual groups them: when to rotate, how many to keep; compression; the
//! files made and their names; mail and scripts. `Ok(false)`: no such
//! directive.

use super::{Create, Freq, Opts};

type Applied = Result<bool, String>;

/// Apply one directive to `o`.
pub(super) fn directive(o: &mut Opts, key: &str, args: &[String]) -> Applied {
    let a = Args { key, args };
    Ok(when(o, &a)? || compression(o, &a)? || files(o, &a)? || mail_and_more(o, &a)?)
}

/// A directive's name and its arguments.
struct Args<'a> {
    key: &'a str,
    args: &'a [String],
}

impl Args<'_> {
    fn one(&self) -> Result<String, String> {
        self.args
            .first()
            .cloned()
            .ok_or_else(|| format!("'{}' needs a value", self.key))
    }

    /// A number (a count, a level, a day) in `ok`'s range; `what` names
    /// it in the error, e.g. "weekday '9' (0-7)".
    fn number<T: std::str::FromStr>(
        &self,
        what: &str,
        ok: impl Fn(&T) -> bool,
    ) -> Result<T, String> {
        let v = self.one()?;
        let (name, range) = what.split_once(' ').unwrap_or((what, ""));
        let sep = if range.is_empty() { "" } else { " " };
        v.parse::<T>()
            .ok()
            .filter(ok)
            .ok_or(format!("{}: bad {name} '{v}'{sep}{range}", self.key))
    }
}

/// The intervals and sizes (the last of them wins, as in logrotate), ages
/// and counts.
fn when(o: &mut Opts, a: &Args) -> Applied {
    match a.key {
        "hourly" => (o.freq, o.size) = (Freq::Hourly, None),
        "daily" => (o.freq, o.size) = (Freq::Daily, None),
        "weekly" => {
            let day = match a.args.first() {
                Some(_) => a.number("weekday (0-7)", |d: &u8| *d <= 7)?,
                None => 0,
            };
            (o.freq, o.size) = (Freq::Weekly(day), None);
        }
        "monthly" => (o.freq, o.size) = (Freq::Monthly, None),
        "yearly" => (o.freq, o.size) = (Freq::Yearly, None),
        "size" => (o.freq, o.size) = (Freq::None, Some(size(&a.one()?)?)),
        "minsize" => o.minsize = Some(size(&a.one()?)?),
        "maxsize" => o.maxsize = Some(size(&a.one()?)?),
        "rotate" => o.rotate = a.number("count", |n: &i64| *n >= -1)?,
        "start" => o.start = a.number("number", |_: &i64| true)?,
        "minage" => o.minage = Some(a.number("count", |_: &u64| true)?),
        "maxage" => o.maxage = Some(a.number("count", |_: &u64| true)?),
        "missingok" => o.missingok = true,
        "nomissingok" => o.missingok = false,
        "ifempty" => o.ifempty = true,
        "notifempty" => o.ifempty = false,
        _ => return Ok(false),
    }
    Ok(true)
}

fn compression(o: &mut Opts, a: &Args) -> Applied {
    match a.key {
        "compress" => o.compress = true,
        "nocompress" => o.compress = false,
        "delaycompress" => o.delaycompress = true,
        "nodelaycompress" => o.delaycompress = false,
        "compressext" => o.compressext = Some(a.one()?),
        "compresscmd" => o.compresscmd = Some(a.one()?),
        "uncompresscmd" => o.uncompresscmd = Some(a.one()?),
        // logrotate splits the options at white space into arguments.
        "compressoptions" => o.compressoptions = Some(a.args.join(" ")),
        "compresslevel" => o.compresslevel = a.number("level (0-9)", |l: &u32| *l <= 9)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// How the rotation is made, where it goes and what it is called.
fn files(o: &mut Opts, a: &Args) -> Applied {
    match a.key {
        "copytruncate" => o.copytruncate = true,
        "nocopytruncate" => o.copytruncate = false,
        "copy" => o.copy = true,
        "nocopy" => o.copy = false,
        "renamecopy" => o.renamecopy = true,
        "norenamecopy" => o.renamecopy = false,
        "create" => o.create = Some(create_spec(a.args, "create")?),
        "nocreate" => o.create = None,
        "dateext" => o.dateext = true,
        "nodateext" => o.dateext = false,
        "dateformat" => o.dateformat = Some(a.one()?),
        "dateyesterday" => o.dateyesterday = true,
        "datehourago" => o.datehourago = true,
        "extension" => o.extension = Some(a.one()?),
        "addextension" => o.addextension = Some(a.one()?),
        "olddir" => o.olddir = Some(a.one()?),
        "noolddir" => o.olddir = None,
        "createolddir" => o.createolddir = Some(create_spec(a.args, "createolddir")?),
        "nocreateolddir" => o.createolddir = None,
        "allowhardlink" => o.allowhardlink = true,
        "noallowhardlink" => o.allowhardlink = false,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Mail, shredding, scripts' sharing, the user, duplicates.
fn mail_and_more(o: &mut Opts, a: &Args) -> Applied {
    match a.key {
        "mail" => o.mail = Some(a.one()?),
        "nomail" => o.mail = None,
        "mailfirst" => o.mailfirst = true,
        "maillast" => o.mailfirst = false,
        "shred" => o.shred = true,
        "noshred" => o.shred = false,
        "shredcycles" => o.shredcycles = Some(a.number("count", |_: &u32| true)?),
        "sharedscripts" => o.sharedscripts = true,
        "nosharedscripts" => o.sharedscripts = false,
        "ignoreduplicates" => o.ignoreduplicates = true,
        "su" => {
            let (Some(u), Some(g)) = (a.args.first(), a.args.get(1)) else {
                return Err("su needs a user and a group".into());
            };
            o.su = Some((u.clone(), g.clone()));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

pub(super) fn size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (num, mult) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("bad size '{v}' (use e.g. 100k, 10M, 1G)"))
}

fn create_spec(args: &[String], what: &str) -> Result<Create, String> {
    let mode = match args.first() {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .map_err(|_| format!("{what}: bad mode '{m}' (octal, e.g. 0640)"))?,
        ),
        None => None,
    };
    Ok(Create {
        mode,
        owner: args.get(1).cloned(),
        group: args.get(2).cloned(),
    })
}
