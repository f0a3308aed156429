//! A throwaway Docker daemon per test: Debian's dockerd 20.10 with its built-in BuildKit, the
//! reference for Dockerfile semantics. Its own socket, data root and exec root under a temp
//! dir, `--storage-driver vfs --iptables=false --bridge=none`, killed on drop. Builds go
//! through Debian's 20.10 CLI (`/usr/bin/docker`, which needs no buildx) with
//! `DOCKER_BUILDKIT=1 docker build --network none`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long dockerd gets to answer `docker version` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The docker CLI that talks to dockerd 20.10 and builds with its BuildKit without buildx.
fn cli() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        debian
    } else {
        PathBuf::from("docker")
    }
}

/// A running dockerd on a private socket.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
}

impl Dockerd {
    /// Start dockerd, or say why it cannot run here (not root, not installed, failed).
    pub fn start() -> Result<Dockerd, String> {
        if !crate::tools::have("dockerd") {
            return Err("dockerd not found (apt-get install docker.io)".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("dockerd needs root".into());
        }
        // Short paths: a unix socket path is limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("dkd-").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        let d = dir.path();
        let socket = d.join("d.sock");
        let log = std::fs::File::create(d.join("log")).map_err(|e| e.to_string())?;
        let ns = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--containerd-namespace", &ns, "--containerd-plugins-namespace", &format!("{ns}-p")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("dockerd: {e}"))?;
        let mut k = Dockerd { dir, child: Some(child), socket };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if k.socket.exists() && k.docker(&["version"]).status.success() {
                return Ok(k);
            }
            if let Some(c) = k.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("dockerd exited with {status}: {}", k.log()));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not start: {}", k.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `docker` command talking to this daemon, with BuildKit on.
    pub fn command(&self) -> Command {
        let mut c = Command::new(cli());
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "1")
            .env("DOCKER_CONFIG", self.dir.path().join("cli"));
        c
    }

    /// `docker ARGS...` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    /// `docker ARGS...`, which must succeed; its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `DOCKER_BUILDKIT=1 docker build --network none -t TAG CONTEXT` (plus `extra`).
    pub fn build(&self, tag: &str, context: &Path, extra: &[&str]) -> Output {
        self.command()
            .args(["build", "--network", "none", "-t", tag])
            .args(extra)
            .arg(context)
            .output()
            .expect("run docker build")
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first: dockerd unmounts and stops its containerd shims on the way out.
            // SAFETY: kill on the pid of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
