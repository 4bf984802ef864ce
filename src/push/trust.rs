//! Where a push may send credentials: the token realm policy.
//!
//! Consumes the registry's host, a Bearer challenge's `realm` URL and the user's
//! `--trust-realm` and `--insecure` lists; produces a verdict before any request goes to
//! the realm. A realm is used when it is on the registry's own host, or on the same
//! registrable domain over https (Docker Hub: `registry-1.docker.io` names
//! `auth.docker.io`), or on a host the user trusts. "Registrable domain" is the Public
//! Suffix List's (<https://publicsuffix.org/>) eTLD+1, via the `psl` crate, so that
//! `a.herokuapp.com` and `b.herokuapp.com` are different sites (docs/decisions/0024).
//! Plain HTTP is used only where the user already accepted it for a registry: loopback
//! hosts and `--insecure` ones.

use super::client::is_loopback;
use std::net::IpAddr;

/// A realm URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower-cased, without brackets or a trailing dot.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

impl RealmUrl {
    /// Parses `url`; `None` when it is not an absolute http(s) URL with a plain host
    /// (user info, an empty host or a bad port are refused, not guessed at).
    pub fn parse(url: &str) -> Option<RealmUrl> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok()?),
            None => None,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(RealmUrl { scheme, host, port })
    }

    /// `host` or `host:port`, as a user would write it in `--trust-realm`.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// The inputs of the realm decision.
pub struct RealmPolicy<'a> {
    /// The registry's host (no port).
    pub registry_host: &'a str,
    /// `--trust-realm` values: `HOST` or `HOST:PORT`.
    pub trusted: &'a [String],
    /// `--insecure` values: `HOST` or `HOST:PORT`.
    pub insecure: &'a [String],
}

fn listed(list: &[String], r: &RealmUrl) -> bool {
    let authority = r.authority();
    list.iter().any(|i| {
        let i = i.trim_end_matches('/').to_ascii_lowercase();
        i == r.host || i == authority || i.trim_matches(['[', ']']) == r.host
    })
}

/// The registrable domain (eTLD+1) of `host`; `None` for IP addresses, single labels
/// and public suffixes themselves.
pub fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<IpAddr>().is_ok() || !host.contains('.') {
        return None;
    }
    psl::domain_str(&host).map(str::to_string)
}

/// True when `a` and `b` are on the same registrable domain.
pub fn same_site(a: &str, b: &str) -> bool {
    match (registrable_domain(a), registrable_domain(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

impl RealmPolicy<'_> {
    /// `Ok(())` when credentials may go to `realm`, else the reason, ending with what
    /// the user can pass to allow it.
    pub fn check(&self, realm: &str) -> Result<(), String> {
        let Some(r) = RealmUrl::parse(realm) else {
            return Err(format!(
                "token realm {realm:?} is not an http(s) URL with a plain host; slipway sent it nothing"
            ));
        };
        let own_host = r.host == self.registry_host.to_ascii_lowercase();
        let trusted = listed(self.trusted, &r);
        let site = r.scheme == "https" && same_site(&r.host, self.registry_host);
        if !(own_host || trusted || site) {
            return Err(format!(
                "token realm {realm} is on {}, which is neither the registry's host nor on its domain over https; slipway sent it nothing. If that token service is yours, pass --trust-realm {}",
                r.host, r.host
            ));
        }
        if r.scheme == "http" && !is_loopback(&r.host) && !listed(self.insecure, &r) {
            return Err(format!(
                "token realm {realm} is plain HTTP, which would expose the credentials; slipway sent it nothing. If that is intended, pass --insecure {}",
                r.authority()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(registry: &str, realm: &str, trusted: &[&str], insecure: &[&str]) -> bool {
        let t: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
        let i: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
        RealmPolicy {
            registry_host: registry,
            trusted: &t,
            insecure: &i,
        }
        .check(realm)
        .is_ok()
    }

    #[test]
    fn realm_urls() {
        let r = RealmUrl::parse("https://Auth.Docker.IO./token?x=1").unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.host.as_str()),
            ("https", "auth.docker.io")
        );
        assert_eq!(r.port, None);
        let r = RealmUrl::parse("http://[::1]:5001/t").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", Some(5001)));
        assert_eq!(r.authority(), "[::1]:5001");
        for bad in [
            "ftp://x/t",
            "/token",
            "https://user:pw@evil.example/t",
            "https://:443/t",
            "https://h:99999/t",
            "https://h:x/t",
        ] {
            assert!(RealmUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn registrable_domains() {
        assert_eq!(
            registrable_domain("registry-1.docker.io").as_deref(),
            Some("docker.io")
        );
        assert!(same_site("registry-1.docker.io", "auth.docker.io"));
        assert!(same_site("registry.gitlab.com", "gitlab.com"));
        assert!(same_site("registry.example.co.uk", "auth.example.co.uk"));
        // Public suffixes, private ones included, separate sites.
        assert!(!same_site("example.co.uk", "evil.co.uk"));
        assert!(!same_site("a.herokuapp.com", "b.herokuapp.com"));
        assert!(!same_site("me.github.io", "you.github.io"));
        // Addresses and single labels have no registrable domain.
        assert!(!same_site("127.0.0.1", "127.0.0.2"));
        assert!(!same_site("10.0.0.1", "10.0.0.1"));
        assert!(!same_site("localhost", "localhost"));
    }

    #[test]
    fn realm_policy() {
        // Docker Hub, GitLab: same registrable domain over https.
        assert!(check(
            "registry-1.docker.io",
            "https://auth.docker.io/token",
            &[],
            &[]
        ));
        assert!(check(
            "registry.gitlab.com",
            "https://gitlab.com/jwt/auth",
            &[],
            &[]
        ));
        // ...but not over plain HTTP.
        assert!(!check(
            "registry-1.docker.io",
            "http://auth.docker.io/token",
            &[],
            &[]
        ));
        // The registry's own host, any port; plain HTTP only on loopback or --insecure.
        assert!(check("127.0.0.1", "http://127.0.0.1:5001/token", &[], &[]));
        assert!(check(
            "reg.example",
            "https://reg.example:8443/token",
            &[],
            &[]
        ));
        assert!(!check("reg.lan", "http://reg.lan:5001/token", &[], &[]));
        assert!(check(
            "reg.lan",
            "http://reg.lan:5001/token",
            &[],
            &["reg.lan:5001"]
        ));
        // Another host: only with --trust-realm (host or host:port).
        assert!(!check("127.0.0.1", "http://127.0.0.2:9/token", &[], &[]));
        assert!(check(
            "127.0.0.1",
            "http://127.0.0.2:9/token",
            &["127.0.0.2"],
            &[]
        ));
        assert!(check(
            "127.0.0.1",
            "http://127.0.0.2:9/t",
            &["127.0.0.2:9"],
            &[]
        ));
        assert!(!check(
            "127.0.0.1",
            "http://127.0.0.2:9/t",
            &["127.0.0.2:8"],
            &[]
        ));
        assert!(!check(
            "a.herokuapp.com",
            "https://b.herokuapp.com/t",
            &[],
            &[]
        ));
        assert!(check(
            "reg.example",
            "https://auth.other/t",
            &["auth.other"],
            &[]
        ));
        // Trusted, but plain HTTP off loopback still needs --insecure.
        assert!(!check(
            "reg.example",
            "http://auth.other/t",
            &["auth.other"],
            &[]
        ));
    }

    #[test]
    fn refusals_name_the_realm_and_the_flag() {
        let p = RealmPolicy {
            registry_host: "127.0.0.1",
            trusted: &[],
            insecure: &[],
        };
        let e = p.check("http://127.0.0.2:4000/token").unwrap_err();
        assert!(e.contains("http://127.0.0.2:4000/token"), "{e}");
        assert!(e.contains("--trust-realm 127.0.0.2"), "{e}");
        let e = p.check("http://auth.example/token").unwrap_err();
        assert!(e.contains("--trust-realm auth.example"), "{e}");
    }
}
