//! `RUN --mount=type=ssh`: the ssh agent given by `--ssh ID[=SOCKET]` reached from inside
//! the step through a socket of its own, owned and moded as the mount says (BuildKit's
//! default: root, 0600), that forwards each connection to the agent. The agent's own
//! socket (and the directory it is in) is never mounted into the container.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A listening socket forwarding to an ssh agent, for the duration of one RUN step.
pub(crate) struct AgentProxy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listen on a new socket (in a private temp directory: a socket path must stay under
    /// 108 bytes) owned by `uid:gid` with `mode`, forwarding to `agent`, which must accept a
    /// connection now.
    pub(crate) fn start(agent: &Path, (uid, gid): (u32, u32), mode: u32) -> io::Result<AgentProxy> {
        UnixStream::connect(agent)
            .map_err(|e| io::Error::new(e.kind(), format!("ssh agent socket {}: {e}", agent.display())))?;
        let dir = tempfile::Builder::new().prefix("hoist-ssh").tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, agent) = (stop.clone(), agent.to_path_buf());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(upstream) = UnixStream::connect(&agent) else { continue };
                forward(client, upstream);
            }
        });
        Ok(AgentProxy { _dir: dir, path, stop, thread: Some(thread) })
    }

    /// The socket to mount into the container.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Copy both ways between `a` and `b` (a thread each), each direction's end shut down when
/// the other side closes it.
fn forward(a: UnixStream, b: UnixStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else { return };
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pipe(a, b2);
    pipe(b, a2);
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so that it sees `stop`
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
