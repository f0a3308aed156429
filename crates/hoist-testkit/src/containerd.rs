//! A throwaway containerd per test: its own root, state and socket in a temp directory, the
//! CRI plugin disabled (no kubelet here), stopped and removed on drop. [`Containerd::ctr`]
//! runs `ctr` against it. Needs root (containerd mounts snapshots and runs shims):
//! [`Containerd::start`] returns `None` and prints `SKIP` when not root or when `containerd`
//! or `ctr` is missing.
//!
//! Not for: sharing one daemon between tests (each test gets its own), or the system's
//! containerd (never touched: nothing here uses `/run/containerd`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh containerd may take to answer `ctr version` (it loads every plugin
/// first; about 0.3 s on an idle machine, seconds on a loaded CI runner).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running containerd of one test.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Start a containerd on a temp socket and root, or print `SKIP <test>: why` and return
    /// `None` (not root, `containerd`/`ctr` missing). Panics if it does not come up.
    pub fn start(test: &str) -> Option<Containerd> {
        for tool in ["containerd", "ctr"] {
            if !crate::tools::require(test, tool) {
                return None;
            }
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: containerd needs root (mounts snapshots, runs shims)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir_in("/tmp").expect("temp dir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("write containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if c.socket().exists() && c.ctr(["version"]).status.success() {
                return Some(c);
            }
            if Instant::now() > deadline {
                panic!("containerd did not start within {START_TIMEOUT:?}:\n{}", c.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC socket (`ctr -a`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The daemon's temp directory (root, state, socket, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What containerd logged so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Run `ctr -a SOCKET ARGS` (add `-n NAMESPACE` yourself) to completion.
    pub fn ctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("ctr").arg("-a").arg(self.socket()).args(args).output().expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted under root/ (a task that was not removed): unmount
        // them so the temp directory can go.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().to_string_lossy().into_owned();
            let mut ours: Vec<&str> =
                mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&root)).collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}
