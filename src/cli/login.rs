//! `hoist login` and `hoist logout`: credentials in the docker-compatible auth file.

use std::io::Read;

use clap::Args;
use hoist::error::{Error, Result};
use hoist::transport::registry::credentials::{self, Credential};
use hoist::transport::registry::Client;

use super::creds::CredentialMap;
use super::Ctx;

/// `hoist login`.
#[derive(Args)]
pub(crate) struct LoginArgs {
    /// Registry host[:port] (a leading https:// or http:// is ignored).
    pub registry: String,
    /// User name.
    #[arg(short, long)]
    username: String,
    /// Password (visible in the process list and shell history: prefer the prompt or
    /// --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

/// `hoist logout`.
#[derive(Args)]
pub(crate) struct LogoutArgs {
    /// Registry host[:port].
    pub registry: String,
}

impl LoginArgs {
    /// The registry as stored: without scheme or trailing slash.
    pub fn host(&self) -> String {
        let r = &self.registry;
        r.strip_prefix("https://").or(r.strip_prefix("http://")).unwrap_or(r).trim_end_matches('/').to_string()
    }
}

/// Check the credentials against the registry, then store them.
pub(crate) async fn login(ctx: &Ctx, args: LoginArgs) -> Result<i32> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io("<stdin>", e))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        _ => return Err(Error::Usage("give exactly one of --password or --password-stdin".into())),
    };
    let registry = args.host();
    let mut creds = CredentialMap::new();
    creds.insert(registry.clone(), Credential::Basic { username: args.username.clone(), password: password.clone() });
    let checker = Client::new(ctx.settings.registry_options(creds))?;
    checker.check_login(&registry, None).await?;
    let (r, u, p) = (registry.clone(), args.username.clone(), password);
    let path = tokio::task::spawn_blocking(move || credentials::store_blocking(&r, &u, &p))
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
    ctx.progress.line(&format!("Login succeeded for {registry} (saved in {})", path.display()));
    Ok(0)
}

/// Remove stored credentials.
pub(crate) async fn logout(ctx: &Ctx, args: LogoutArgs) -> Result<i32> {
    let registry = args.registry;
    let r = registry.clone();
    let removed = tokio::task::spawn_blocking(move || credentials::remove_blocking(&r))
        .await
        .map_err(|e| Error::Other(e.to_string()))??;
    if removed {
        ctx.progress.line(&format!("Removed credentials for {registry}"));
        Ok(0)
    } else {
        Err(Error::not_found(format!("credentials for {registry}"), credentials::login_file().display().to_string()))
    }
}
