//! `WWW-Authenticate` challenges, parsed (no I/O): what the send loop (`http.rs`) reads off a
//! 401 and the token flow (`auth.rs`) answers.

use std::collections::BTreeMap;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// No (known) challenge: requests go without credentials.
    None,
    /// HTTP basic auth.
    Basic {
        /// The challenge's realm.
        realm: String,
    },
    /// Bearer tokens from a token server.
    Bearer {
        /// The token endpoint URL.
        realm: String,
        /// The `service` to ask tokens for.
        service: Option<String>,
        /// The scope the registry named.
        scope: Option<String>,
    },
}

/// Parse `Scheme k="v", k2=v2`. Unknown schemes give `Challenge::None`.
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| params.get(k).cloned();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic { realm: get("realm").unwrap_or_default() },
        "bearer" => match get("realm") {
            Some(realm) => Challenge::Bearer { realm, service: get("service"), scope: get("scope") },
            None => Challenge::None,
        },
        _ => Challenge::None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into())
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Challenge::Basic { realm: "x".into() });
        assert_eq!(parse_challenge("Negotiate"), Challenge::None);
    }
}
