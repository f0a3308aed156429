//! `hoist tags REF`: the tags of a repository, layout or archive, one a line (control
//! characters escaped: tags come from the source).

use clap::Args;
use hoist::error::{printable, Error, Result};
use hoist::transport::{open_source, Endpoint};

use super::out::outln;
use super::Ctx;

/// `hoist tags`.
#[derive(Args)]
pub(crate) struct TagsArgs {
    /// A registry repository, a layout or an archive.
    pub reference: String,
}

/// List the tags.
pub(crate) async fn run(ctx: &Ctx, args: TagsArgs) -> Result<i32> {
    if let Some(host) = bare_registry(&args.reference) {
        return Err(Error::Usage(format!(
            "{} is a registry, not a repository: name one (`hoist tags {host}/REPO`){}",
            printable(&args.reference),
            if super::has_command("catalog") {
                format!(", or list its repositories with `hoist catalog {host}`")
            } else {
                String::new()
            }
        )));
    }
    let ep = Endpoint::from_user_input(&args.reference)?;
    let src = open_source(&ep, &ctx.client)?;
    let tags = src.list_tags().await?;
    if tags.is_empty() {
        ctx.progress.line(&format!("{} has no tags", printable(&src.location())));
    }
    if ctx.settings.json() {
        outln!("{}", serde_json::json!({ "tags": tags }));
    } else {
        for t in tags {
            outln!("{}", printable(&t));
        }
    }
    Ok(0)
}

/// `REF` when it names a registry alone (`localhost:5000`, `registry.example.com`,
/// `https://host/`), not a repository: no path, and a host part that docker would read as a
/// registry (a dot, a port, `localhost`). `ubuntu` or `ubuntu:22.04` are Docker Hub repositories.
fn bare_registry(reference: &str) -> Option<&str> {
    let r = reference.strip_prefix("docker://").or_else(|| reference.strip_prefix("https://")).unwrap_or(reference);
    let r = r.strip_suffix('/').unwrap_or(r);
    if r.is_empty() || r.contains('/') || r.contains('@') || reference.starts_with("oci") {
        return None;
    }
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok
        && (host.contains('.') || host == "localhost" || (port.is_some() && host.parse::<std::net::IpAddr>().is_ok())))
    .then_some(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bare_registries_are_told_from_repositories() {
        for r in ["localhost:5000", "registry.example.com", "127.0.0.1:5000", "docker://localhost:5000/"] {
            assert!(super::bare_registry(r).is_some(), "{r}");
        }
        for r in ["ubuntu", "ubuntu:22.04", "localhost:5000/demo", "oci:./x", "example.com/app:v1", "./layout"] {
            assert!(super::bare_registry(r).is_none(), "{r}");
        }
    }
}
