//! Progress on stderr, in buildx's modes (`--progress auto|tty|plain|json|quiet`):
//! - tty: one bar per blob in flight (bytes, rate, its own ETA) and an overall bar (total
//!   bytes, rate, ETA), every line fitted to the terminal's width (`COLUMNS` overrides; 80
//!   when unknown), long names cut in the middle;
//! - plain (auto's choice when stderr is not a terminal, i.e. CI): a line when each blob
//!   starts, a heartbeat line every few seconds while it runs (bytes so far, rate), a line
//!   when it ends;
//! - json: one JSON object per line (`{"event":"start"|"progress"|"done"|"message"|"summary",…}`);
//! - quiet: nothing.
//!
//! Files hashed by a builder (`model pack`) report through the same modes: a bar, or start,
//! heartbeat and end lines, or `start`/`progress`/`done` events with a `file` key.
//!
//! Every command that moved blobs ends with a summary: what moved, how much, elapsed time and
//! average rate. No ANSI escapes unless stderr is a terminal and `NO_COLOR` is unset.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist::ingest::FileProgress;
use hoist::transport::{BlobOutcome, Progress};
use hoist::{Descriptor, Digest};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// Lines: start, heartbeat, end.
    Plain,
    /// One JSON event per line.
    Json,
    /// Nothing.
    Quiet,
}

/// Seconds between heartbeat lines in plain and json mode (`HOIST_PROGRESS_INTERVAL`
/// overrides, for tests; fractions allowed).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// What is in flight: a blob being moved, or a local file being hashed.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Blob(Digest),
    File(String),
}

/// A blob in flight (or a file being hashed).
struct Active {
    key: Key,
    /// The short name shown: a short digest or the file's path.
    label: String,
    size: u64,
    bytes: u64,
    started: Instant,
    last_beat: Instant,
    bar: Option<ProgressBar>,
}

#[derive(Default)]
struct Totals {
    copied: u64,
    existed: u64,
    mounted: u64,
    bytes: u64,
    hashed: u64,
    hashed_bytes: u64,
}

struct State {
    active: HashMap<Key, Active>,
    totals: Totals,
}

/// The CLI's [`Progress`] (and [`FileProgress`]): thread-safe, cheap per call; clones share
/// one display and one set of totals.
#[derive(Clone)]
pub struct CliProgress {
    mode: Mode,
    /// Columns every tty line fits in.
    width: usize,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    state: Arc<Mutex<State>>,
    started: Instant,
    interval: Duration,
}

/// The bars on screen, when there are: a result printed to stdout (often the same terminal)
/// hides them first, so that a digest never lands on a bar's line ([`suspend_bars`]).
static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();

/// Run `f` (a write to stdout) with the progress bars cleared, then redraw them.
pub(crate) fn suspend_bars<R>(f: impl FnOnce() -> R) -> R {
    match BARS.get() {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

/// `n` bytes for people: `512 B`, `1.5 MiB`.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `bytes` over `elapsed` as a rate.
fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 0.001 {
        return "-".into();
    }
    format!("{}/s", human((bytes as f64 / secs) as u64))
}

fn json_line(v: serde_json::Value) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{v}");
}

impl CliProgress {
    /// Progress in `mode`; plain and json start a heartbeat thread.
    pub fn new(mode: Mode) -> CliProgress {
        let interval = std::env::var("HOIST_PROGRESS_INTERVAL")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && *s < 3600.0)
            .map_or(HEARTBEAT, Duration::from_secs_f64);
        let width = columns();
        let (multi, overall) = match mode {
            Mode::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let _ = BARS.set(multi.clone());
                let overall = multi.add(ProgressBar::new(0));
                overall.set_style(bar_style(width));
                overall.set_prefix(fit_name("total", NAME_COLS));
                (multi, Some(overall))
            }
            _ => (MultiProgress::with_draw_target(ProgressDrawTarget::hidden()), None),
        };
        let state = Arc::new(Mutex::new(State { active: HashMap::new(), totals: Totals::default() }));
        if matches!(mode, Mode::Plain | Mode::Json) {
            let weak = Arc::downgrade(&state);
            // Ends when the progress (and so the state) is dropped.
            let _ = std::thread::Builder::new().name("progress".into()).spawn(move || loop {
                std::thread::sleep(interval / 2);
                let Some(state) = weak.upgrade() else { return };
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                for a in st.active.values_mut() {
                    if now.duration_since(a.last_beat) >= interval {
                        a.last_beat = now;
                        heartbeat(mode, a);
                    }
                }
            });
        }
        CliProgress { mode, width, multi, overall, state, started: Instant::now(), interval }
    }

    /// A note for the user (not data): stderr, or a `message` event in json mode.
    pub fn line(&self, msg: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                let _ = self.multi.println(msg);
            }
            Mode::Plain => eprintln!("{msg}"),
            Mode::Json => json_line(serde_json::json!({"event": "message", "message": msg})),
        }
    }

    /// Where a Dockerfile build's RUN output goes: with `--progress json`, each line becomes a
    /// `{"event":"log","stream":"stdout|stderr","line"}` event, so stderr stays pure JSON;
    /// otherwise the commands write to stderr themselves.
    pub fn run_output(&self) -> Option<hoist::dockerfile::RunOutput> {
        (self.mode == Mode::Json).then(|| {
            std::sync::Arc::new(|stream: hoist::dockerfile::OutputStream, line: &str| {
                json_line(serde_json::json!({"event": "log", "stream": stream.as_str(), "line": line}))
            }) as hoist::dockerfile::RunOutput
        })
    }

    /// The end-of-command summary, if any blob was handled: what moved, how much, how long.
    pub fn summary(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let t = &st.totals;
        if t.copied + t.existed + t.mounted + t.hashed == 0 {
            return;
        }
        let elapsed = self.started.elapsed();
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => json_line(serde_json::json!({
                "event": "summary",
                "blobsCopied": t.copied,
                "blobsExisted": t.existed,
                "blobsMounted": t.mounted,
                "bytes": t.bytes,
                "filesHashed": t.hashed,
                "bytesHashed": t.hashed_bytes,
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "bytesPerSecond": if elapsed.as_secs_f64() > 0.0 { (t.bytes as f64 / elapsed.as_secs_f64()) as u64 } else { 0 },
            })),
            _ => {
                let hashed = if t.hashed > 0 {
                    format!("{} file(s) hashed ({}), ", t.hashed, human(t.hashed_bytes))
                } else {
                    String::new()
                };
                let line = format!(
                    "summary: {hashed}{} blob(s) copied ({}), {} existed, {} mounted in {:.1} s ({})",
                    t.copied,
                    human(t.bytes),
                    t.existed,
                    t.mounted,
                    elapsed.as_secs_f64(),
                    rate(t.bytes + t.hashed_bytes, elapsed)
                );
                self.fitted(&line)
            }
        }
    }

    /// A line of the progress display itself (an end line, the summary): in tty mode cut to
    /// the terminal's width, as the bars are; else as it is.
    fn fitted(&self, line: &str) {
        if self.mode == Mode::Bars {
            self.line(&fit_name(line, self.width));
        } else {
            self.line(line);
        }
    }

    /// Something starts: a bar, a start line or a start event.
    fn begin(&self, key: Key, label: String, size: u64, what: &str, json: serde_json::Value) {
        let bar = match self.mode {
            Mode::Bars => {
                let pb = self.multi.add(ProgressBar::new(size));
                pb.set_style(bar_style(self.width));
                pb.set_prefix(fit_name(&label, NAME_COLS));
                if let Some(o) = &self.overall {
                    o.inc_length(size);
                }
                Some(pb)
            }
            Mode::Plain => {
                eprintln!("{:>8} {label} ({}{what})", "start", human(size));
                None
            }
            Mode::Json => {
                json_line(json);
                None
            }
            Mode::Quiet => None,
        };
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.active.insert(key.clone(), Active { key, label, size, bytes: 0, started: now, last_beat: now, bar });
    }

    /// `n` more bytes of `key`.
    fn step(&self, key: &Key, n: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(key, Key::Blob(_)) {
            st.totals.bytes += n;
        }
        if let Some(a) = st.active.get_mut(key) {
            a.bytes += n;
            if let Some(pb) = &a.bar {
                pb.inc(n);
            }
        }
        if let Some(o) = &self.overall {
            o.inc(n);
        }
    }

    /// `key` is over: its bar goes, and its time is returned.
    fn end(&self, key: &Key) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let active = st.active.remove(key);
        drop(st);
        if let Some(pb) = active.as_ref().and_then(|a| a.bar.as_ref()) {
            pb.finish_and_clear();
            self.multi.remove(pb);
        }
        active.as_ref().map_or(Duration::ZERO, |a| a.started.elapsed())
    }

    /// The heartbeat interval in force.
    #[allow(dead_code)]
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

fn heartbeat(mode: Mode, a: &Active) {
    let elapsed = a.started.elapsed();
    match mode {
        Mode::Plain => eprintln!(
            "{:>8} {} {}/{} ({:.0}%) {}",
            "...",
            a.label,
            human(a.bytes),
            human(a.size),
            if a.size > 0 { a.bytes as f64 * 100.0 / a.size as f64 } else { 100.0 },
            rate(a.bytes, elapsed)
        ),
        Mode::Json => {
            let mut v = serde_json::json!({
                "event": "progress",
                "bytes": a.bytes,
                "size": a.size,
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            });
            match &a.key {
                Key::Blob(d) => v["digest"] = d.to_string().into(),
                Key::File(f) => v["file"] = f.clone().into(),
            }
            json_line(v)
        }
        _ => {}
    }
}

/// Columns of the name in a tty bar line (a short digest is 19).
const NAME_COLS: usize = 20;

/// Columns a tty line may take: `COLUMNS` when set, else the terminal's width, else 80.
fn columns() -> usize {
    let from_env = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok());
    from_env.or_else(terminal_columns).filter(|c| (20..=1000).contains(c)).unwrap_or(80)
}

/// The width of the terminal on stderr, if it is one.
fn terminal_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize struct it is given; fd 2 stays open.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// A bar line's style for `width` columns: `NAME [=====>   ] 1.50 MiB/10.00 MiB 2.00 MiB/s eta 5s`.
/// The numbers take at most 11+1+11 (`1023.99 MiB`), 13 (`1023.99 MiB/s`) and 4 (`23h`)
/// columns; the bar gets what is left (none below 5 columns).
fn bar_style(width: usize) -> ProgressStyle {
    const NUMBERS: usize = 2 + 2 + 11 + 1 + 11 + 1 + 13 + 5 + 4;
    let bar = width.saturating_sub(NAME_COLS + NUMBERS);
    let template = if bar >= 5 {
        format!("{{prefix}} [{{bar:{bar}}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}")
    } else {
        "{prefix} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}".to_string()
    };
    ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// `name` in at most `cols` characters, padded to `cols` when it is a bar's name (a
/// longer one keeps its start and end: `models/llama…safetensors`).
fn fit_name(name: &str, cols: usize) -> String {
    let n = name.chars().count();
    if n <= cols {
        return if cols == NAME_COLS { format!("{name:<cols$}") } else { name.to_string() };
    }
    let keep = cols.saturating_sub(1);
    let head = keep / 2;
    let tail = keep - head;
    let start: String = name.chars().take(head).collect();
    let end: String = name.chars().skip(n - tail).collect();
    format!("{start}\u{2026}{end}")
}

impl Progress for CliProgress {
    fn start(&self, desc: &Descriptor) {
        let json = serde_json::json!({"event": "start", "digest": desc.digest.to_string(), "size": desc.size, "mediaType": desc.media_type});
        self.begin(
            Key::Blob(desc.digest.clone()),
            desc.digest.short(),
            desc.size,
            &format!(", {}", desc.media_type),
            json,
        );
    }
    fn advance(&self, desc: &Descriptor, n: u64) {
        self.step(&Key::Blob(desc.digest.clone()), n);
    }
    fn reset(&self, desc: &Descriptor, offset: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = st.active.get_mut(&Key::Blob(desc.digest.clone())) {
            let before = a.bytes;
            a.bytes = offset;
            if let Some(pb) = &a.bar {
                pb.set_position(offset);
            }
            let back = before.saturating_sub(offset);
            st.totals.bytes = st.totals.bytes.saturating_sub(back);
            if let Some(o) = &self.overall {
                o.set_position(o.position().saturating_sub(back));
            }
        }
    }
    fn done(&self, desc: &Descriptor, outcome: BlobOutcome) {
        let elapsed = self.end(&Key::Blob(desc.digest.clone()));
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                BlobOutcome::Uploaded => st.totals.copied += 1,
                BlobOutcome::Existed => st.totals.existed += 1,
                BlobOutcome::Mounted => st.totals.mounted += 1,
            }
        }
        let what = match outcome {
            BlobOutcome::Uploaded => "copied",
            BlobOutcome::Existed => "exists",
            BlobOutcome::Mounted => "mounted",
        };
        match self.mode {
            Mode::Json => json_line(serde_json::json!({
                "event": "done",
                "digest": desc.digest.to_string(),
                "outcome": what,
                "size": desc.size,
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            })),
            _ => {
                let (name, size, secs) = (desc.digest.short(), human(desc.size), elapsed.as_secs_f64());
                let full = format!("{what:>8} {name} ({size}, {}) in {secs:.1} s", desc.media_type);
                if self.mode == Mode::Bars && full.chars().count() > self.width {
                    // At a terminal the media type goes first when the line is too wide.
                    self.fitted(&format!("{what:>8} {name} ({size}) in {secs:.1} s"));
                } else {
                    self.line(&full);
                }
            }
        }
    }
    fn message(&self, msg: &str) {
        // Library messages may quote a registry or a source: controls escaped.
        self.line(&hoist::error::printable(msg));
    }
}

/// A builder hashing local files (`model pack`): the same display as blobs, keyed by path.
impl FileProgress for CliProgress {
    fn file_start(&self, name: &str, size: u64) {
        // Keyed by the name as given, shown with controls escaped.
        let shown = hoist::error::printable(name).into_owned();
        let json = serde_json::json!({"event": "start", "file": shown, "size": size, "action": "hash"});
        self.begin(Key::File(name.to_string()), shown, size, ", hashing", json);
    }
    fn file_advance(&self, name: &str, n: u64) {
        self.step(&Key::File(name.to_string()), n);
    }
    fn file_done(&self, name: &str, digest: &Digest) {
        let key = Key::File(name.to_string());
        let name = hoist::error::printable(name);
        let size = self.state.lock().unwrap_or_else(|e| e.into_inner()).active.get(&key).map_or(0, |a| a.size);
        let elapsed = self.end(&key);
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.totals.hashed += 1;
            st.totals.hashed_bytes += size;
        }
        match self.mode {
            Mode::Json => json_line(serde_json::json!({
                "event": "done",
                "file": name,
                "digest": digest.to_string(),
                "outcome": "hashed",
                "size": size,
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            })),
            _ => self.fitted(&format!(
                "{:>8} {name} ({}) {} in {:.1} s",
                "hashed",
                human(size),
                digest.short(),
                elapsed.as_secs_f64()
            )),
        }
    }
}
