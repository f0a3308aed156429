//! A throwaway containerd per test: its own socket, root and state directories under a temp
//! dir, the CRI plugin disabled, killed on drop. Needs root and the `containerd`, `ctr`
//! binaries; [`Containerd::start`] says why when it cannot run here (a skip, which fails under
//! `CI=true`), and panics when containerd is there but fails to start (a failure, never a skip).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long containerd gets to answer `ctr version` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running containerd on a private socket.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    snapshotter: String,
}

impl Containerd {
    /// [`Containerd::start`], or a skip of `test` ([`crate::tools::skip_note`]) and `None`.
    #[track_caller]
    pub fn start_or_skip(test: &str) -> Option<Containerd> {
        match Containerd::start() {
            Ok(c) => Some(c),
            Err(why) => {
                crate::tools::skip_note(test, false, &why);
                None
            }
        }
    }

    /// Start containerd, or say why it cannot run here (not root, not installed). Panics when
    /// it is installed and we are root but it does not start: that is a failure, not a skip.
    pub fn start() -> Result<Containerd, String> {
        for tool in ["containerd", "ctr"] {
            if !crate::tools::have(tool) {
                return Err(format!("{tool} not found (apt-get install containerd)"));
            }
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("containerd needs root (it mounts snapshots and owns its state)".into());
        }
        // Short paths: a unix socket path is limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("ctrd-").tempdir_in("/tmp").expect("containerd temp dir");
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{0}/t.sock\"\n",
                dir.path().display(),
                socket.display()
            ),
        )
        .expect("write containerd's config");
        let log = std::fs::File::create(dir.path().join("log")).expect("containerd's log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("containerd's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd is installed but does not start: {e}"));
        let mut c = Containerd { dir, child: Some(child), socket, snapshotter: String::new() };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if c.socket.exists() && c.ctr(&["version"]).status.success() {
                break;
            }
            if Instant::now() > deadline {
                panic!("containerd did not start within {START_TIMEOUT:?}: {}", c.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // overlayfs when it works on this filesystem, else native.
        let plugins = c.ctr(&["plugins", "ls"]);
        let listed = String::from_utf8_lossy(&plugins.stdout).into_owned();
        let overlay_ok = listed
            .lines()
            .any(|l| l.contains("overlayfs") && l.contains("snapshotter") && l.split_whitespace().last() == Some("ok"));
        c.snapshotter = if overlay_ok { "overlayfs" } else { "native" }.into();
        Ok(c)
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's root directory (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The snapshotter images are unpacked into here (`overlayfs` when it works, else `native`).
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// `ctr --address SOCKET ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr").arg("--address").arg(&self.socket).args(args).output().expect("run ctr")
    }

    /// `ctr ARGS...`, which must succeed; its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Bytes under the content store's blob and ingest directories (what was written to disk).
    pub fn content_bytes(&self) -> u64 {
        let root = self.root().join("io.containerd.content.v1.content");
        walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Snapshots a test left mounted would keep the temp dir busy.
        let root = self.dir.path().to_path_buf();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut inside: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&root))
                .collect();
            inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in inside {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}
