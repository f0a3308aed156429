//! Users of a stage: `USER` and `--chown` names resolved through the stage's own
//! `/etc/passwd` and `/etc/group` (read inside the stage, never the host's), and the
//! supplementary groups a RUN gets.

use std::path::PathBuf;

use super::fs::read_small;

/// Largest /etc/passwd or /etc/group read to resolve a user name.
const MAX_PASSWD: u64 = 4 << 20;

/// `name[:group]` or numeric ids → uid, gid, from the stage's /etc/passwd and /etc/group.
pub(crate) fn resolve_user(dirs: &[PathBuf], spec: &str) -> std::result::Result<(u64, u64), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    // `--chown=:` and `--chown=:G`: BuildKit takes an empty user as root.
    let u = if u.is_empty() { "0" } else { u };
    let passwd = read_small(dirs, "etc/passwd", MAX_PASSWD).unwrap_or_default();
    let (uid, primary) = match u.parse::<u64>() {
        Ok(n) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(0);
            (n, gid)
        }
        Err(_) => {
            let f = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == u)
                .ok_or_else(|| format!("user {u:?} not found in /etc/passwd"))?;
            (f[2].parse().map_err(|_| "bad uid in /etc/passwd")?, f[3].parse().map_err(|_| "bad gid in /etc/passwd")?)
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let group = read_small(dirs, "etc/group", MAX_PASSWD).unwrap_or_default();
                let f = group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .ok_or_else(|| format!("group {g:?} not found in /etc/group"))?;
                f[2].parse().map_err(|_| "bad gid in /etc/group")?
            }
        },
    };
    Ok((uid, gid))
}

/// The supplementary groups of `spec` (USER without a group): every /etc/group entry
/// listing the user's name, its primary group too when that lists it, as runc's user lookup
/// (and so BuildKit) gives them. None when USER names a group, or the user has no name.
pub(crate) fn supplementary_groups(dirs: &[PathBuf], spec: &str) -> Vec<u64> {
    if spec.contains(':') {
        return vec![];
    }
    let passwd = read_small(dirs, "etc/passwd", MAX_PASSWD).unwrap_or_default();
    let name = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == spec || f[2] == spec))
        .map(|f| f[0].to_string());
    let Some(name) = name else { return vec![] };
    let group = read_small(dirs, "etc/group", MAX_PASSWD).unwrap_or_default();
    let mut out: Vec<u64> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[3].split(',').any(|m| m.trim() == name))
        .filter_map(|f| f[2].parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
