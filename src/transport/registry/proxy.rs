//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (and their lower-case forms), read once when a
//! client is made, with the rules of Go's `net/http` (`httpproxy.FromEnvironment`), which
//! docker, podman and skopeo follow: HTTPS URLs go through `HTTPS_PROXY`, plain ones
//! through `HTTP_PROXY`; a loopback host (`localhost`, 127.0.0.0/8, `::1`) is never
//! proxied; `NO_PROXY` lists `*`, domains (`example.com`: it and its subdomains;
//! `.example.com`, `*.example.com`: subdomains only), `host:port`, IP addresses and CIDR
//! ranges.
//!
//! Not for: proxy auto-config, SOCKS (a `socks5://` proxy URL is handed to reqwest as is).

use std::net::IpAddr;

use url::Url;

/// Proxy settings read from the environment.
#[derive(Clone, Debug, Default)]
pub struct ProxyEnv {
    https: Option<Url>,
    http: Option<Url>,
    no_proxy: Vec<String>,
}

/// The first of `names` set to a non-empty value.
fn env_first(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// A proxy value as Go reads it: a URL, or `host:port` meaning `http://host:port`.
fn proxy_url(v: &str) -> Option<Url> {
    let v = v.trim();
    match Url::parse(v) {
        Ok(u) if u.has_host() => Some(u),
        _ => Url::parse(&format!("http://{v}")).ok().filter(|u| u.has_host()),
    }
}

impl ProxyEnv {
    /// The settings of this process's environment.
    pub fn from_env() -> ProxyEnv {
        ProxyEnv::new(
            env_first(&["HTTPS_PROXY", "https_proxy"]).as_deref(),
            env_first(&["HTTP_PROXY", "http_proxy"]).as_deref(),
            env_first(&["NO_PROXY", "no_proxy"]).as_deref(),
        )
    }

    /// Settings from the values of `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    pub fn new(https: Option<&str>, http: Option<&str>, no_proxy: Option<&str>) -> ProxyEnv {
        let https = https.and_then(proxy_url);
        let http = http.and_then(proxy_url);
        let no_proxy = no_proxy
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        ProxyEnv { https, http, no_proxy }
    }

    /// Whether any proxy is set.
    pub fn is_set(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// The proxy a request to `url` goes through, if any.
    pub fn proxy_for(&self, url: &Url) -> Option<Url> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = url.port_or_known_default();
        if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return None;
        }
        if self.no_proxy.iter().any(|e| no_proxy_matches(e, &host, port)) {
            return None;
        }
        Some(proxy.clone())
    }
}

/// Whether the `NO_PROXY` entry `entry` (lower case) covers `host` (lower case, no
/// brackets) on `port`.
fn no_proxy_matches(entry: &str, host: &str, port: Option<u16>) -> bool {
    if entry == "*" {
        return true;
    }
    // CIDR
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits), Ok(ip)) = (net.parse::<IpAddr>(), bits.parse::<u32>(), host.parse::<IpAddr>()) else {
            return false;
        };
        return in_cidr(ip, net, bits);
    }
    // host:port (or [v6]:port); a bare v6 address has several colons
    let (name, want_port) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse::<u16>().ok())),
            None => return false,
        },
        None => match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => return false,
            },
            _ => (entry, None),
        },
    };
    if want_port.is_some_and(|p| Some(p) != port) {
        return false;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return host.parse::<IpAddr>().is_ok_and(|h| h == ip);
    }
    let name = name.strip_prefix('*').unwrap_or(name);
    match name.strip_prefix('.') {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => host == name || host.ends_with(&format!(".{name}")),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(env: &ProxyEnv, url: &str) -> Option<String> {
        env.proxy_for(&Url::parse(url).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn scheme_picks_the_proxy_and_loopback_is_never_proxied() {
        let env = ProxyEnv::new(Some("http://sp:3128"), Some("hp:8080"), None);
        assert_eq!(via(&env, "https://reg.example/v2/").as_deref(), Some("http://sp:3128/"));
        assert_eq!(via(&env, "http://reg.example/v2/").as_deref(), Some("http://hp:8080/"));
        for local in
            ["https://localhost:5000/v2/", "http://127.0.0.1:5000/", "http://127.9.0.1/", "https://[::1]:5000/"]
        {
            assert_eq!(via(&env, local), None, "{local}");
        }
        let none = ProxyEnv::new(None, None, None);
        assert!(!none.is_set());
        assert_eq!(via(&none, "https://reg.example/"), None);
    }

    #[test]
    fn no_proxy_entries() {
        let env = ProxyEnv::new(
            Some("http://p:1"),
            Some("http://p:1"),
            Some("example.com, .sub.org,*.star.net, 10.0.0.0/8, 192.168.1.7, only.port:5000, [fd00::1]:443"),
        );
        for direct in [
            "https://example.com/",
            "https://a.example.com/",
            "https://x.sub.org/",
            "https://x.star.net/",
            "https://10.1.2.3/",
            "https://192.168.1.7:5000/",
            "https://only.port:5000/",
            "https://[fd00::1]/",
        ] {
            assert_eq!(via(&env, direct), None, "{direct}");
        }
        for proxied in [
            "https://notexample.com/",
            "https://sub.org/",
            "https://star.net/",
            "https://11.0.0.1/",
            "https://192.168.1.8/",
            "https://only.port:5001/",
            "https://[fd00::1]:8443/",
        ] {
            assert!(via(&env, proxied).is_some(), "{proxied}");
        }
        let all = ProxyEnv::new(Some("http://p:1"), None, Some("*"));
        assert_eq!(via(&all, "https://anything.example/"), None);
    }
}
