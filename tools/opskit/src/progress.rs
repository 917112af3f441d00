//! How far along a long run is, on stderr.
//!
//! On a terminal it is a progress bar (bytes done, rate and, when the total
//! is known, the time left), drawn by `indicatif`. Anywhere else (systemd's
//! journal, a cron mail, a pipe) it is a plain log line at most every
//! `OPSKIT_PROGRESS_EVERY` (30 s by default; `0` turns the lines off), so
//! the journal shows that a three-hour restore is moving and how fast.
//! `-q` turns both off. Records on stdout are never touched.
//!
//! A [`Progress`] is cheap to clone and shared by the threads of one run;
//! [`Progress::reader`] counts what is read through it, [`Progress::add`]
//! what a writer reports.
//! Log lines written while a bar is drawn go above it
//! ([`crate::logging`] writes through [`LogSink`]).

use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::units::{format_duration, format_size};

/// How often a run not on a terminal logs its progress (`0` for never).
pub const EVERY_ENV: &str = "OPSKIT_PROGRESS_EVERY";
const DEFAULT_EVERY: Duration = Duration::from_secs(30);

/// A bar's summary line is kept only for runs at least this long.
const SUMMARY_AFTER: Duration = Duration::from_secs(2);

/// Every bar of this process, drawn together (parallel transfers) on
/// [`Tty`], four times a second.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| {
        MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Tty::default()),
            4,
        ))
    })
}

/// Bars drawn now: log lines go through [`bars`] only while there are.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Whether stderr is a terminal a bar can be drawn on (not `TERM=dumb`,
/// as under Emacs or some `kubectl exec`: those get lines).
fn on_terminal() -> bool {
    let dumb = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb");
    io::stderr().is_terminal() && !dumb
}

/// Stderr for bars. A write that fails (the terminal hung up: an SSH
/// session lost during a restore) is swallowed and ends drawing: a run
/// goes on, and logging never panics, whatever became of its terminal.
#[derive(Debug, Default)]
struct Tty {
    gone: AtomicBool,
}

impl Tty {
    fn term(&self, f: impl FnOnce(&console::Term) -> io::Result<()>) -> io::Result<()> {
        if !self.gone.load(Ordering::Relaxed) && f(&console::Term::stderr()).is_err() {
            self.gone.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl indicatif::TermLike for Tty {
    fn width(&self) -> u16 {
        console::Term::stderr().size_checked().map_or(80, |s| s.1)
    }
    fn height(&self) -> u16 {
        console::Term::stderr().size_checked().map_or(24, |s| s.0)
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.term(|t| t.move_cursor_up(n))
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.term(|t| t.move_cursor_down(n))
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.term(|t| t.move_cursor_right(n))
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.term(|t| t.move_cursor_left(n))
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.term(|t| t.write_line(s))
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.term(|t| t.write_str(s))
    }
    fn clear_line(&self) -> io::Result<()> {
        self.term(|t| t.clear_line())
    }
    fn flush(&self) -> io::Result<()> {
        self.term(|t| t.flush())
    }
}

/// `what` as it may be shown: a name from a manifest or a bucket could
/// hold escape sequences for the operator's terminal, or a line break to
/// forge a line of the journal.
fn printable(what: String) -> String {
    if what.chars().any(char::is_control) {
        what.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    } else {
        what
    }
}

/// The progress of one operation, or nothing when it is not shown.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Inner>>);

/// What a step is measured in: bytes (of a total, when known), or its
/// time alone.
#[derive(Clone, Copy)]
enum Measure {
    Bytes(Option<u64>),
    Time,
}

struct Inner {
    what: String,
    measure: Measure,
    start: Instant,
    done: AtomicU64,
    show: Show,
}

enum Show {
    Bar(ProgressBar),
    Lines {
        every: Duration,
        next: Mutex<Instant>,
        logged: AtomicBool,
    },
}

impl Progress {
    /// Start showing `what` (e.g. "pulling db-2026…"), `total` bytes when
    /// known. Shows nothing under `-q` or with `OPSKIT_PROGRESS_EVERY=0`
    /// off a terminal.
    pub fn start(what: impl Into<String>, total: Option<u64>) -> Progress {
        Self::show(what.into(), Measure::Bytes(total))
    }

    /// Start showing `what`, a step whose only measure is its time (a
    /// `pg_restore -j` under way): [`Progress::tick`] it now and then.
    pub fn running(what: impl Into<String>) -> Progress {
        Self::show(what.into(), Measure::Time)
    }

    /// Say where it is, if it is time to (a step measured by time).
    pub fn tick(&self) {
        self.add(0);
    }

    fn show(what: String, measure: Measure) -> Progress {
        if !log::log_enabled!(log::Level::Info) {
            return Progress(None);
        }
        let show = if on_terminal() {
            Show::Bar(bar(measure))
        } else {
            match every() {
                Some(every) => Show::Lines {
                    every,
                    next: Mutex::new(Instant::now() + every),
                    logged: Default::default(),
                },
                None => return Progress(None),
            }
        };
        let what = printable(what);
        if let Show::Bar(b) = &show {
            b.set_message(what.clone());
        }
        Progress(Some(Arc::new(Inner {
            what,
            measure,
            start: Instant::now(),
            done: AtomicU64::new(0),
            show,
        })))
    }

    /// Count `n` more bytes done.
    pub fn add(&self, n: u64) {
        let Some(i) = &self.0 else { return };
        let done = i.done.fetch_add(n, Ordering::Relaxed) + n;
        match &i.show {
            Show::Bar(b) => b.inc(n),
            Show::Lines {
                every,
                next,
                logged,
            } => {
                let now = Instant::now();
                let Ok(mut next) = next.try_lock() else {
                    return;
                };
                if now < *next {
                    return;
                }
                *next = now + *every;
                drop(next);
                logged.store(true, Ordering::Relaxed);
                log::info!("{}", i.line(done, now));
            }
        }
    }

    /// The run is done: the bar goes, and a line says what it came to when
    /// it was long enough to have shown progress.
    pub fn finish(&self) {
        let Some(i) = &self.0 else { return };
        let done = i.done.load(Ordering::Relaxed);
        let took = i.start.elapsed();
        let say = match &i.show {
            Show::Bar(b) => {
                clear(b);
                took >= SUMMARY_AFTER
            }
            Show::Lines { logged, .. } => logged.load(Ordering::Relaxed),
        };
        let secs = format_duration(Duration::from_secs(took.as_secs().max(1)));
        match (say, i.measure) {
            (false, _) => {}
            (true, Measure::Bytes(_)) => log::info!(
                "{}: {} in {secs} ({}/s)",
                i.what,
                format_size(done),
                format_size(rate(done, took)),
            ),
            (true, Measure::Time) => log::info!("{}: done in {secs}", i.what),
        }
    }

    /// `r`, counting what is read from it.
    pub fn reader<R>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            progress: self.clone(),
        }
    }
}

impl Inner {
    /// The journal's line: "pulling X: 1.2 GiB of 4.0 GiB (30%), 85.0 MiB/s,
    /// about 33s left".
    fn line(&self, done: u64, now: Instant) -> String {
        let took = now.duration_since(self.start);
        let per_s = rate(done, took);
        let running = format_duration(Duration::from_secs(took.as_secs().max(1)));
        match self.measure {
            Measure::Time => format!("{}: {running} running", self.what),
            Measure::Bytes(Some(total)) if total > 0 => {
                let left = total.saturating_sub(done);
                let eta = match done {
                    0 => "time left unknown".to_string(),
                    d => {
                        let secs = took.as_secs_f64() * left as f64 / d as f64;
                        let secs = Duration::from_secs((secs.round() as u64).max(1));
                        format!("about {} left", format_duration(secs))
                    }
                };
                format!(
                    "{}: {} of {} ({}%), {}/s, {eta}",
                    self.what,
                    format_size(done),
                    format_size(total),
                    (done.min(total) * 100 / total),
                    format_size(per_s),
                )
            }
            Measure::Bytes(_) => format!(
                "{}: {} so far, {}/s, {running} running",
                self.what,
                format_size(done),
                format_size(per_s),
            ),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A run that failed: the bar goes without a summary.
        if let Show::Bar(b) = &self.show {
            clear(b);
        }
    }
}

/// Take `b` off the terminal (once).
fn clear(b: &ProgressBar) {
    if !b.is_finished() {
        b.finish_and_clear();
        bars().remove(b);
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

fn rate(bytes: u64, took: Duration) -> u64 {
    (bytes as f64 / took.as_secs_f64().max(0.001)) as u64
}

fn bar(measure: Measure) -> ProgressBar {
    let (b, template) = match measure {
        Measure::Time => (ProgressBar::no_length(), "{spinner} {wide_msg} {elapsed}"),
        Measure::Bytes(Some(t)) => (
            ProgressBar::new(t),
            "{wide_msg} [{bar:16}] {percent:>3}% of {binary_total_bytes}, {binary_bytes_per_sec}, {eta} left",
        ),
        Measure::Bytes(None) => (
            ProgressBar::no_length(),
            "{spinner} {wide_msg} {binary_bytes}, {binary_bytes_per_sec}, {elapsed}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ");
    b.set_style(style);
    LIVE.fetch_add(1, Ordering::Relaxed);
    let b = bars().add(b);
    b.enable_steady_tick(Duration::from_millis(500));
    b
}

/// `OPSKIT_PROGRESS_EVERY`, or the default; `0` (or `off`) is never. A
/// value that is not a duration is said once and the default used.
fn every() -> Option<Duration> {
    let Ok(v) = std::env::var(EVERY_ENV) else {
        return Some(DEFAULT_EVERY);
    };
    match v.trim() {
        "" => Some(DEFAULT_EVERY),
        "0" | "off" => None,
        s => match crate::units::parse_duration(s) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                static SAID: OnceLock<()> = OnceLock::new();
                SAID.get_or_init(|| log::warn!("{EVERY_ENV}: {}; using 30s", e.msg));
                Some(DEFAULT_EVERY)
            }
        },
    }
}

/// A reader whose bytes count towards a [`Progress`].
pub struct Counted<T> {
    inner: T,
    progress: Progress,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Stderr for the logger: a line is written above the bars, not through
/// them.
pub struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|_| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if LIVE.load(Ordering::Relaxed) == 0 {
            return io::stderr().write_all(buf);
        }
        bars().suspend(|| io::stderr().write_all(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(measure: Measure) -> Inner {
        Inner {
            what: "pulling x".into(),
            measure,
            start: Instant::now(),
            done: AtomicU64::new(0),
            show: Show::Lines {
                every: Duration::from_secs(30),
                next: Mutex::new(Instant::now()),
                logged: Default::default(),
            },
        }
    }

    #[test]
    fn a_known_total_gives_share_rate_and_time_left() {
        let i = lines(Measure::Bytes(Some(4 << 30)));
        let at = i.start + Duration::from_secs(10);
        assert_eq!(
            i.line(1 << 30, at),
            "pulling x: 1.0 GiB of 4.0 GiB (25%), 102.4 MiB/s, about 30s left"
        );
    }

    #[test]
    fn an_unknown_total_gives_what_is_done() {
        let i = lines(Measure::Bytes(None));
        let at = i.start + Duration::from_secs(90);
        assert_eq!(
            i.line(900 << 20, at),
            "pulling x: 900.0 MiB so far, 10.0 MiB/s, 1m30s running"
        );
    }

    #[test]
    fn a_step_measured_by_time_says_how_long_it_runs() {
        let i = lines(Measure::Time);
        let at = i.start + Duration::from_secs(250);
        assert_eq!(i.line(0, at), "pulling x: 4m10s running");
    }

    #[test]
    fn names_cannot_drive_the_terminal() {
        assert_eq!(
            printable("reading x\u{1b}]0;pwned\u{7}/base.tar\n".into()),
            "reading x?]0;pwned?/base.tar?"
        );
        assert_eq!(printable("pulling app-1".into()), "pulling app-1");
    }

    #[test]
    fn counting_passes_bytes_through() {
        let p = Progress::default();
        let mut r = p.reader(&b"hello"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
    }
}
