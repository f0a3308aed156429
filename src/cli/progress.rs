//! Progress on stderr: bars on a TTY, one plain line per blob otherwise, nothing with --quiet.

use std::collections::HashMap;
use std::sync::Mutex;

use hoist::transport::{BlobOutcome, Progress};
use hoist::{Descriptor, Digest};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress shows.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// One line per blob.
    Plain,
    /// Nothing.
    Quiet,
}

pub struct CliProgress {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

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

impl CliProgress {
    pub fn new(mode: Mode) -> CliProgress {
        let multi = match mode {
            Mode::Bars => MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            _ => MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        };
        CliProgress { mode, multi, bars: Mutex::new(HashMap::new()) }
    }

    pub fn line(&self, msg: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Bars => {
                let _ = self.multi.println(msg);
            }
            Mode::Plain => eprintln!("{msg}"),
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, desc: &Descriptor) {
        if let Mode::Bars = self.mode {
            let pb = self.multi.add(ProgressBar::new(desc.size));
            pb.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_prefix(desc.digest.short());
            self.bars.lock().expect("lock").insert(desc.digest.clone(), pb);
        }
    }
    fn advance(&self, desc: &Descriptor, n: u64) {
        if let Some(pb) = self.bars.lock().expect("lock").get(&desc.digest) {
            pb.inc(n);
        }
    }
    fn reset(&self, desc: &Descriptor, offset: u64) {
        if let Some(pb) = self.bars.lock().expect("lock").get(&desc.digest) {
            pb.set_position(offset);
        }
    }
    fn done(&self, desc: &Descriptor, outcome: BlobOutcome) {
        if let Some(pb) = self.bars.lock().expect("lock").remove(&desc.digest) {
            pb.finish_and_clear();
            self.multi.remove(&pb);
        }
        let what = match outcome {
            BlobOutcome::Uploaded => "copied",
            BlobOutcome::Existed => "exists",
            BlobOutcome::Mounted => "mounted",
        };
        self.line(&format!("{what:>7} {} ({}, {})", desc.digest.short(), human(desc.size), desc.media_type));
    }
    fn message(&self, msg: &str) {
        // Library messages may quote a registry or a source: controls escaped.
        self.line(&hoist::error::printable(msg));
    }
}
