//! `hoist login` and `hoist logout`: credentials in the docker-compatible auth file.

use std::io::{BufRead, IsTerminal, Read, Write};

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
        registry_host(&self.registry)
    }
}

/// The registry `host[:port]` of what a user typed (`https://host/` as docker accepts it).
fn registry_host(r: &str) -> String {
    r.strip_prefix("https://").or(r.strip_prefix("http://")).unwrap_or(r).trim_end_matches('/').to_string()
}

/// Check the credentials against the registry, then store them.
pub(crate) async fn login(ctx: &Ctx, args: LoginArgs) -> Result<i32> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), false) => {
            // As docker says it: the password is in the process list and the shell history.
            eprintln!("hoist: warning: a password given with -p/--password is visible to other users (ps) and in shell history; use --password-stdin or the prompt");
            p.clone()
        }
        (None, false) if std::io::stdin().is_terminal() => {
            prompt_password(&format!("Password for {}@{}: ", args.username, args.host()))?
        }
        (None, false) => {
            return Err(Error::Usage(
                "no password: give --password-stdin (stdin is not a terminal, so hoist cannot prompt)".into(),
            ))
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io("<stdin>", e))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (Some(_), true) => return Err(Error::Usage("give one of --password or --password-stdin, not both".into())),
    };
    let registry = args.host();
    let mut creds = CredentialMap::new();
    creds.insert(registry.clone(), Credential::Basic { username: args.username.clone(), password: password.clone() });
    let checker = Client::new(ctx.settings.registry_options(creds))?;
    checker.check_login(&registry, None).await?;
    let (r, u, p) = (registry.clone(), args.username.clone(), password);
    let path = tokio::task::spawn_blocking(move || credentials::store_blocking(&r, &u, &p))
        .await
        .map_err(|e| Error::task("credential store", e))??;
    ctx.progress.line(&format!("Login succeeded for {registry} (saved in {})", path.display()));
    if ctx.json() {
        super::out::outln!(
            "{}",
            serde_json::json!({"registry": registry, "username": args.username, "savedIn": path.display().to_string()})
        );
    }
    Ok(0)
}

/// Longest password line read from the terminal.
const MAX_PASSWORD_BYTES: u64 = 64 << 10;

/// Ask for a password on the terminal with echo off (restored afterwards, also on error).
fn prompt_password(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, a terminal (checked by the caller); `saved` is a valid termios.
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above; `quiet` is a copy of the terminal's own settings.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().take(MAX_PASSWORD_BYTES).read_line(&mut line);
    if have_termios {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.map_err(|e| Error::read("password from the terminal", e))?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        return Err(Error::Usage("empty password".into()));
    }
    Ok(pw)
}

/// Remove stored credentials.
pub(crate) async fn logout(ctx: &Ctx, args: LogoutArgs) -> Result<i32> {
    let registry = registry_host(&args.registry);
    let r = registry.clone();
    let removed = tokio::task::spawn_blocking(move || credentials::remove_blocking(&r))
        .await
        .map_err(|e| Error::task("credential store", e))??;
    if removed {
        ctx.progress.line(&format!("Removed credentials for {registry}"));
        if ctx.json() {
            super::out::outln!("{}", serde_json::json!({"registry": registry, "removed": true}));
        }
        Ok(0)
    } else {
        Err(Error::not_found(format!("credentials for {registry}"), credentials::login_file().display().to_string()))
    }
}
