//! Progress on stderr, in buildx's modes (`--progress auto|tty|plain|json|quiet`):
//! - tty: one bar per blob in flight and an overall bar (bytes, rate, ETA) within 80 columns;
//! - plain (auto's choice when stderr is not a terminal, i.e. CI): a line when each blob
//!   starts, a heartbeat line every few seconds while it runs (bytes so far, rate), a line
//!   when it ends;
//! - json: one JSON object per line (`{"event":"start"|"progress"|"done"|"message"|"summary",…}`);
//! - quiet: nothing.
//!
//! Every command that moved blobs ends with a summary: what moved, how much, elapsed time and
//! average rate. No ANSI escapes unless stderr is a terminal and `NO_COLOR` is unset.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A blob in flight.
struct Active {
    desc: Descriptor,
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
}

struct State {
    active: HashMap<Digest, Active>,
    totals: Totals,
}

/// The CLI's [`Progress`]: thread-safe, cheap per call.
pub struct CliProgress {
    mode: Mode,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    state: Arc<Mutex<State>>,
    started: Instant,
    interval: Duration,
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
        let (multi, overall) = match mode {
            Mode::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let overall = multi.add(ProgressBar::new(0));
                overall.set_style(
                    ProgressStyle::with_template("total   [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
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
        CliProgress { mode, multi, overall, state, started: Instant::now(), interval }
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

    /// The end-of-command summary, if any blob was handled: what moved, how much, how long.
    pub fn summary(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let t = &st.totals;
        if t.copied + t.existed + t.mounted == 0 {
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
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "bytesPerSecond": if elapsed.as_secs_f64() > 0.0 { (t.bytes as f64 / elapsed.as_secs_f64()) as u64 } else { 0 },
            })),
            _ => self.line(&format!(
                "summary: {} blob(s) copied ({}), {} existed, {} mounted in {:.1} s ({})",
                t.copied,
                human(t.bytes),
                t.existed,
                t.mounted,
                elapsed.as_secs_f64(),
                rate(t.bytes, elapsed)
            )),
        }
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
            a.desc.digest.short(),
            human(a.bytes),
            human(a.desc.size),
            if a.desc.size > 0 { a.bytes as f64 * 100.0 / a.desc.size as f64 } else { 100.0 },
            rate(a.bytes, elapsed)
        ),
        Mode::Json => json_line(serde_json::json!({
            "event": "progress",
            "digest": a.desc.digest.to_string(),
            "bytes": a.bytes,
            "size": a.desc.size,
            "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        })),
        _ => {}
    }
}

impl Progress for CliProgress {
    fn start(&self, desc: &Descriptor) {
        let bar = match self.mode {
            Mode::Bars => {
                let pb = self.multi.add(ProgressBar::new(desc.size));
                pb.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                pb.set_prefix(desc.digest.short());
                if let Some(o) = &self.overall {
                    o.inc_length(desc.size);
                }
                Some(pb)
            }
            Mode::Plain => {
                eprintln!("{:>8} {} ({}, {})", "start", desc.digest.short(), human(desc.size), desc.media_type);
                None
            }
            Mode::Json => {
                json_line(
                    serde_json::json!({"event": "start", "digest": desc.digest.to_string(), "size": desc.size, "mediaType": desc.media_type}),
                );
                None
            }
            Mode::Quiet => None,
        };
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.active
            .insert(desc.digest.clone(), Active { desc: desc.clone(), bytes: 0, started: now, last_beat: now, bar });
    }
    fn advance(&self, desc: &Descriptor, n: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.totals.bytes += n;
        if let Some(a) = st.active.get_mut(&desc.digest) {
            a.bytes += n;
            if let Some(pb) = &a.bar {
                pb.inc(n);
            }
        }
        if let Some(o) = &self.overall {
            o.inc(n);
        }
    }
    fn reset(&self, desc: &Descriptor, offset: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = st.active.get_mut(&desc.digest) {
            let before = a.bytes;
            a.bytes = offset;
            if let Some(pb) = &a.bar {
                pb.set_position(offset);
            }
            st.totals.bytes = st.totals.bytes.saturating_sub(before.saturating_sub(offset));
        }
    }
    fn done(&self, desc: &Descriptor, outcome: BlobOutcome) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let active = st.active.remove(&desc.digest);
        match outcome {
            BlobOutcome::Uploaded => st.totals.copied += 1,
            BlobOutcome::Existed => st.totals.existed += 1,
            BlobOutcome::Mounted => st.totals.mounted += 1,
        }
        drop(st);
        if let Some(pb) = active.as_ref().and_then(|a| a.bar.as_ref()) {
            pb.finish_and_clear();
            self.multi.remove(pb);
        }
        let what = match outcome {
            BlobOutcome::Uploaded => "copied",
            BlobOutcome::Existed => "exists",
            BlobOutcome::Mounted => "mounted",
        };
        let elapsed = active.as_ref().map_or(Duration::ZERO, |a| a.started.elapsed());
        match self.mode {
            Mode::Json => json_line(serde_json::json!({
                "event": "done",
                "digest": desc.digest.to_string(),
                "outcome": what,
                "size": desc.size,
                "elapsedSeconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            })),
            _ => self.line(&format!(
                "{what:>8} {} ({}, {}) in {:.1} s",
                desc.digest.short(),
                human(desc.size),
                desc.media_type,
                elapsed.as_secs_f64()
            )),
        }
    }
    fn message(&self, msg: &str) {
        // Library messages may quote a registry or a source: controls escaped.
        self.line(&hoist::error::printable(msg));
    }
}
