//! Registry authentication inputs: `WWW-Authenticate` challenges and credentials.
//!
//! Consumes a 401 response's challenge header (RFC 7235 section 4.1: a comma-separated list
//! of `scheme [token68 | name=value, ...]`, values as tokens or quoted-strings) and the
//! places credentials come from (flags, `SLIPWAY_REGISTRY_USERNAME`/`_PASSWORD`, the
//! `auths` map of Docker's `config.json`). Produces [`Challenge`]s and [`Credentials`].
//! The token flow itself is Docker's: <https://distribution.github.io/distribution/spec/auth/token/>.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters in order; names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
    /// A token68 instead of parameters (rare in challenges).
    pub token68: Option<String>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> &str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }
    /// A quoted-string after its opening quote; `\` escapes the next character.
    fn quoted(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                    self.i += 1;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
    /// True when an `name =` auth-param starts here (not a new challenge's scheme).
    fn at_param(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j).copied().is_some_and(is_tchar) {
            j += 1;
        }
        if j == self.i {
            return false;
        }
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if self.s.get(j) != Some(&b'=') {
            return false;
        }
        // `abc==` with nothing after is a token68, not a parameter.
        let mut k = j + 1;
        while matches!(self.s.get(k), Some(b' ' | b'\t')) {
            k += 1;
        }
        matches!(self.s.get(k), Some(c) if *c == b'"' || is_tchar(*c))
    }
}

/// Parses a `WWW-Authenticate` value into its challenges. Malformed input yields the
/// challenges parsed so far (an unusable header leads to a clear error later, not here).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut sc = Scanner {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        sc.skip_ws_commas();
        if sc.peek().is_none() {
            break;
        }
        let scheme = sc.token().to_ascii_lowercase();
        if scheme.is_empty() {
            break;
        }
        let mut ch = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        sc.skip_ws();
        if !sc.at_param() && sc.peek().is_some_and(is_token68_char) {
            let start = sc.i;
            while sc.peek().is_some_and(is_token68_char) {
                sc.i += 1;
            }
            while sc.peek() == Some(b'=') {
                sc.i += 1;
            }
            ch.token68 = Some(String::from_utf8_lossy(&sc.s[start..sc.i]).into_owned());
            out.push(ch);
            continue;
        }
        loop {
            let save = sc.i;
            sc.skip_ws_commas();
            if !sc.at_param() {
                sc.i = save;
                break;
            }
            let name = sc.token().to_ascii_lowercase();
            sc.skip_ws();
            sc.i += 1; // '='
            sc.skip_ws();
            let value = if sc.peek() == Some(b'"') {
                sc.i += 1;
                match sc.quoted() {
                    Some(v) => v,
                    None => {
                        out.push(ch);
                        return out;
                    }
                }
            } else {
                sc.token().to_string()
            };
            ch.params.push((name, value));
        }
        out.push(ch);
    }
    out
}

/// A user name and password for one registry, and where they came from.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
    /// Where they came from, for messages ("--username", "$DOCKER_CONFIG/config.json").
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.username, self.source)
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            slipway_common::base64::encode(
                format!("{}:{}", self.username, self.password).as_bytes()
            )
        )
    }
}

/// Credentials from `SLIPWAY_REGISTRY_USERNAME` and `SLIPWAY_REGISTRY_PASSWORD`, if both set.
pub fn from_env() -> Option<Credentials> {
    let user = std::env::var("SLIPWAY_REGISTRY_USERNAME").ok()?;
    let pass = std::env::var("SLIPWAY_REGISTRY_PASSWORD").ok()?;
    Some(Credentials {
        username: user,
        password: pass,
        source: "SLIPWAY_REGISTRY_USERNAME/SLIPWAY_REGISTRY_PASSWORD".into(),
    })
}

/// Docker's client config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The `auths` entry of the Docker config at `path` for `registry` (`host[:port]`).
/// A missing file is no credentials; an unreadable or malformed one is an error.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let want = normalize_registry(registry);
    for (key, entry) in auths {
        if normalize_registry(key) != want {
            continue;
        }
        let source = format!("{} (auths.{key})", path.display());
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|x| x.as_str()),
            entry.get("password").and_then(|x| x.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
                source,
            }));
        }
        let Some(auth) = entry.get("auth").and_then(|x| x.as_str()) else {
            continue;
        };
        let decoded = slipway_common::base64::decode_token(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| format!("{source}: auth is not base64 of user:password"))?;
        let Some((u, p)) = decoded.split_once(':') else {
            anyhow::bail!("{source}: auth is not base64 of user:password (no ':')");
        };
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
            source,
        }));
    }
    Ok(None)
}

/// A config key or registry as `host[:port]`: scheme and path removed, Docker Hub's
/// aliases folded into `docker.io`.
fn normalize_registry(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_params() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        // The comma inside the quoted scope does not split it.
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn basic_and_escapes_and_spacing() {
        let c = parse_challenges(r#"Basic realm="Registry \"prod\"", charset=UTF-8"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"Registry "prod""#));
        assert_eq!(c[0].param("CHARSET"), Some("UTF-8"));
        let c = parse_challenges(r#"BASIC   realm = "x""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("x"));
    }

    #[test]
    fn several_challenges() {
        let c = parse_challenges(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple", Bearer realm="t",error="invalid_token""#,
        );
        let schemes: Vec<_> = c.iter().map(|x| x.scheme.as_str()).collect();
        assert_eq!(schemes, ["newauth", "basic", "bearer"]);
        assert_eq!(c[0].param("type"), Some("1"));
        assert_eq!(c[0].param("title"), Some(r#"Login to "apps""#));
        assert_eq!(c[1].param("realm"), Some("simple"));
        assert_eq!(c[2].param("error"), Some("invalid_token"));
    }

    #[test]
    fn token68_and_bare_scheme() {
        let c = parse_challenges("Negotiate, Other abc+/==");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "negotiate");
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].token68.as_deref(), Some("abc+/=="));
    }

    #[test]
    fn malformed_does_not_panic() {
        for h in [
            "",
            ",,,",
            "Bearer realm=\"unterminated",
            "=",
            "Basic realm=",
            "\"x\"",
        ] {
            let _ = parse_challenges(h);
        }
        let c = parse_challenges("Bearer realm=\"unterminated");
        assert_eq!(c[0].scheme, "bearer");
    }

    #[test]
    fn docker_config_auths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{"https://127.0.0.1:5000/v2/":{"auth":"YWxpY2U6czNjcjN0OndpdGgtY29sb24="},
                "https://index.docker.io/v1/":{"auth":"Ym9iOnB3"}}}"#,
        )
        .unwrap();
        let c = from_docker_config(&p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, "s3cr3t:with-colon");
        let h = from_docker_config(&p, "docker.io").unwrap().unwrap();
        assert_eq!(h.username, "bob");
        assert!(from_docker_config(&p, "127.0.0.1:5001").unwrap().is_none());
        assert!(from_docker_config(&d.path().join("none.json"), "x")
            .unwrap()
            .is_none());
        assert_eq!(
            c.basic_header(),
            format!(
                "Basic {}",
                slipway_common::base64::encode(b"alice:s3cr3t:with-colon")
            )
        );
    }
}
