//! Registry authentication: `WWW-Authenticate` challenges, which credential a registry
//! gets, and the bearer token flow (GET realm with service and scopes, optionally with
//! basic credentials; POST for an identity token), with a token cache per scope set and
//! single-flight refresh.

use std::time::Duration;

use base64::Engine;

pub use super::challenge::{parse_challenge, Challenge};
use super::credentials::{self, Credential};
use super::http::{net_err, read_limited, ReadError, WithoutUrl, MAX_TOKEN_BODY};
use super::retry::{retriable_status, retry_after, RetryState};
use super::{Client, Host};
use crate::error::{Error, Result};

/// Token endpoint answer: `token` or `access_token`.
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    /// The token (docker token spec).
    #[serde(default)]
    pub token: Option<String>,
    /// The token (OAuth2 answers).
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    /// Whichever of the two fields is set and not empty.
    pub fn into_token(self) -> Option<String> {
        self.token.filter(|t| !t.is_empty()).or(self.access_token.filter(|t| !t.is_empty()))
    }
}

impl Client {
    /// The credential `registry` gets: the one given for it (never another registry's),
    /// else (unless anonymous, or the registry asks for none) the auth files' (may run a
    /// credential helper).
    pub(super) async fn credential_for(&self, registry: &str, challenge: &Challenge) -> Result<Option<Credential>> {
        match (self.opts.credential(registry), self.opts.anonymous, challenge) {
            (Some(c), _, _) => Ok(Some(c.clone())),
            (None, true, _) | (None, _, Challenge::None) => Ok(None),
            (None, false, _) => {
                let r = registry.to_string();
                let job = tokio::task::spawn_blocking(move || credentials::lookup_blocking(&r));
                match tokio::time::timeout(Duration::from_secs(60), job).await {
                    Ok(Ok(res)) => res,
                    Ok(Err(e)) => Err(Error::task("credential lookup", e)),
                    Err(_) => Err(Error::Auth {
                        registry: registry.to_string(),
                        reason: "credential lookup timed out".into(),
                    }),
                }
            }
        }
    }

    /// Authorization header value for `scopes` on `host`, fetching a token when needed.
    ///
    /// `rejected` is the header value the registry just refused (a 401), when the caller wants
    /// a new token. Refreshing is single-flight: with `--jobs 8`, all eight requests in flight
    /// when a token expires get their 401 together; the first to take the fetch lock replaces
    /// the token, and the others, finding a token that is no longer the one they were refused,
    /// use it instead of each fetching (and each replacing) another one.
    pub(super) async fn authorization(
        &self,
        host: &Host,
        scopes: &[String],
        rejected: Option<&str>,
    ) -> Result<Option<String>> {
        match &host.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic { .. } => match &host.credential {
                Some(Credential::Basic { username, password }) => Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
                ))),
                Some(Credential::IdentityToken { .. }) => Err(Error::Auth {
                    registry: host.name.clone(),
                    reason: "registry wants basic auth but only an identity token is stored".into(),
                }),
                None => Ok(None),
            },
            Challenge::Bearer { realm, service, .. } => {
                let key = scopes.join(" ");
                // The cached token, unless it is the one the registry refused. Tokens are
                // compared by value: a token server hands out a new string each time (fresh
                // `jti`, `iat`), so an equal string is the very token that was refused.
                let usable = || {
                    let t = host.tokens.lock().expect("lock").get(&key).map(|t| format!("Bearer {t}"))?;
                    (rejected != Some(t.as_str())).then_some(t)
                };
                if let Some(t) = usable() {
                    return Ok(Some(t));
                }
                // One fetch at a time; whoever waited finds the token the first one fetched
                // (for a first use, or a refresh after the same refused token).
                let _fetching = host.token_fetch.lock().await;
                if let Some(t) = usable() {
                    return Ok(Some(t));
                }
                let token = self.fetch_token(host, realm, service.as_deref(), scopes).await?;
                host.tokens.lock().expect("lock").insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(&self, host: &Host, realm: &str, service: Option<&str>, scopes: &[String]) -> Result<String> {
        let mut url = url::Url::parse(realm)
            .map_err(|e| Error::Auth { registry: host.name.clone(), reason: format!("bad token realm: {e}") })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut retry = RetryState::new(&self.opts.retry);
        loop {
            let req = match &host.credential {
                // An identity token is an OAuth2 refresh token: distribution's OAuth2 token spec
                // wants it POSTed as a form, scopes space-separated in one `scope` field, to
                // the realm itself (no query); the answer names the token `access_token`.
                Some(Credential::IdentityToken { token, .. }) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", token.clone()),
                        ("client_id", "hoist".to_string()),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_string()));
                    }
                    if !scopes.is_empty() {
                        form.push(("scope", scopes.join(" ")));
                    }
                    self.http.post(realm).form(&form)
                }
                Some(Credential::Basic { username, password }) => {
                    self.http.get(url.clone()).basic_auth(username, Some(password))
                }
                None => self.http.get(url.clone()),
            };
            let wait = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body = match read_limited(resp, MAX_TOKEN_BODY, &host.name, self.opts.read_timeout).await {
                        Ok(b) => b,
                        Err(ReadError::TooLarge) => {
                            return Err(Error::Auth {
                                registry: host.name.clone(),
                                reason: format!("token endpoint answer exceeds the limit of {MAX_TOKEN_BODY} bytes"),
                            })
                        }
                        Err(ReadError::Failed(e)) => return Err(e),
                    };
                    let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| Error::Auth {
                        registry: host.name.clone(),
                        reason: "token endpoint answered without a JSON token".into(),
                    })?;
                    return t.into_token().ok_or_else(|| Error::Auth {
                        registry: host.name.clone(),
                        reason: "token endpoint returned an empty token".into(),
                    });
                }
                Ok(resp) if retriable_status(resp.status()) => retry.failed(retry_after(resp.headers())).ok_or(resp),
                Ok(resp) => Err(resp),
                Err(e) => match retry.failed(None) {
                    Some(wait) => {
                        tracing::debug!("token request failed: {}", e.without_url_ref());
                        Ok(wait)
                    }
                    None => return Err(net_err(&host.name, &e)),
                },
            };
            match wait {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(resp) => {
                    let status = resp.status();
                    return Err(Error::Auth {
                        registry: host.name.clone(),
                        reason: format!(
                            "token request denied ({status}){}",
                            if let Some(Credential::IdentityToken { .. }) = host.credential {
                                ": the stored identity token was refused; log in again (`hoist login`, `docker login`)"
                            } else if host.credential.is_some() {
                                ": check the username and password"
                            } else {
                                ": no credentials found; run `hoist login`"
                            }
                        ),
                    });
                }
            }
        }
    }
}
