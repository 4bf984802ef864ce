//! The provisioning config's `[kubernetes]` section: consumes what a node needs to join
//! a cluster (API server endpoint, bootstrap token, CA certificate hashes, node name,
//! labels, taints), produces the kubeadm `JoinConfiguration` (API `kubeadm.k8s.io/v1beta4`,
//! the version kubeadm 1.31 and later read) as a file for `kubeadm join --config`.
//!
//! The file is JSON, which is also YAML, so kubeadm reads it as written and tests read it
//! back field by field. The image's `slipway-kubeadm-join.service` runs the join when
//! the file exists and the node has not joined yet (no /etc/kubernetes/kubelet.conf).

use crate::config::{ConfigError, FileSpec, Owner};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the JoinConfiguration goes (root only: it holds the bootstrap token).
pub const JOIN_CONFIG: &str = "/etc/kubernetes/slipway-join.json";
/// The CRI socket kubelet and kubeadm use on slipway images.
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";

/// `[kubernetes]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawKubernetes {
    api_server_endpoint: String,
    token: String,
    #[serde(default)]
    ca_cert_hashes: Vec<String>,
    #[serde(default)]
    unsafe_skip_ca_verification: bool,
    node_name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taint: Vec<RawTaint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTaint {
    key: String,
    value: Option<String>,
    effect: String,
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        key: format!("kubernetes.{}", key.into()),
        msg: msg.into(),
    }
}

/// Checks the section and returns the JoinConfiguration file to write.
pub fn join_file(k: RawKubernetes) -> Result<FileSpec, ConfigError> {
    check_endpoint(&k.api_server_endpoint).map_err(|m| err("api-server-endpoint", m))?;
    check_token(&k.token).map_err(|m| err("token", m))?;
    for (i, h) in k.ca_cert_hashes.iter().enumerate() {
        check_ca_hash(h).map_err(|m| err(format!("ca-cert-hashes[{i}]"), m))?;
    }
    if k.ca_cert_hashes.is_empty() && !k.unsafe_skip_ca_verification {
        return Err(err(
            "ca-cert-hashes",
            "is empty: give the cluster CA's \"sha256:<64 hex digits>\" (kubeadm token create \
             --print-join-command prints it), or set unsafe-skip-ca-verification = true",
        ));
    }
    if let Some(n) = &k.node_name {
        check_dns_subdomain(n).map_err(|m| err("node-name", m))?;
    }
    for (key, value) in &k.labels {
        check_label_key(key).map_err(|m| err(format!("labels.{key:?}"), m))?;
        check_label_value(value).map_err(|m| err(format!("labels.{key:?}"), m))?;
    }
    let mut taints = Vec::new();
    for (i, t) in k.taint.iter().enumerate() {
        check_label_key(&t.key).map_err(|m| err(format!("taint[{i}].key"), m))?;
        if let Some(v) = &t.value {
            check_label_value(v).map_err(|m| err(format!("taint[{i}].value"), m))?;
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
            return Err(err(
                format!("taint[{i}].effect"),
                format!(
                    "{:?} is not a taint effect (expected NoSchedule, PreferNoSchedule or NoExecute)",
                    t.effect
                ),
            ));
        }
        let mut m = Map::new();
        m.insert("key".into(), json!(t.key));
        if let Some(v) = &t.value {
            m.insert("value".into(), json!(v));
        }
        m.insert("effect".into(), json!(t.effect));
        taints.push(Value::Object(m));
    }
    let mut token = Map::new();
    token.insert("apiServerEndpoint".into(), json!(k.api_server_endpoint));
    token.insert("token".into(), json!(k.token));
    if !k.ca_cert_hashes.is_empty() {
        token.insert("caCertHashes".into(), json!(k.ca_cert_hashes));
    }
    if k.unsafe_skip_ca_verification {
        token.insert("unsafeSkipCAVerification".into(), json!(true));
    }
    let mut reg = Map::new();
    if let Some(n) = &k.node_name {
        reg.insert("name".into(), json!(n));
    }
    reg.insert("criSocket".into(), json!(CRI_SOCKET));
    // Left out, kubeadm keeps its default; an empty list would mean "no taints" too, so
    // the key is written only when the config has some.
    if !taints.is_empty() {
        reg.insert("taints".into(), Value::Array(taints));
    }
    if !k.labels.is_empty() {
        let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
        reg.insert(
            "kubeletExtraArgs".into(),
            json!([{ "name": "node-labels", "value": labels.join(",") }]),
        );
    }
    let doc = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": { "bootstrapToken": Value::Object(token) },
        "nodeRegistration": Value::Object(reg),
    });
    let mut content = serde_json::to_vec_pretty(&doc).map_err(|e| err("", e.to_string()))?;
    content.push(b'\n');
    Ok(FileSpec {
        path: PathBuf::from(JOIN_CONFIG),
        mode: 0o600,
        owner: Owner::Ids(0, 0),
        content,
        key: "kubernetes".into(),
    })
}

/// `host:port`, the host a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_endpoint(s: &str) -> Result<(), String> {
    let bad =
        || format!("{s:?} is not HOST:PORT (e.g. \"10.0.0.10:6443\" or \"cp.example.com:6443\")");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || check_dns_subdomain(host).is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A bootstrap token: 6 and 16 characters of `[a-z0-9]`, joined by a dot.
fn check_token(s: &str) -> Result<(), String> {
    let ok = s.split_once('.').is_some_and(|(id, secret)| {
        id.len() == 6
            && secret.len() == 16
            && format!("{id}{secret}")
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err("is not a bootstrap token (expected 6 and 16 characters of a-z and 0-9 joined by '.', as `kubeadm token create` prints)".into())
    }
}

fn check_ca_hash(s: &str) -> Result<(), String> {
    let ok = s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not \"sha256:\" and 64 lower-case hex digits"
        ))
    }
}

/// A DNS-1123 subdomain (what Kubernetes accepts as a node name).
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"
        ))
    }
}

/// A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63
/// characters of letters, digits, '-', '_' and '.', starting and ending alphanumeric.
fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p)
            .map_err(|_| format!("{s:?}: the prefix {p:?} is not a DNS subdomain"))?;
    }
    if name.is_empty() || !label_chars(name) {
        return Err(format!(
            "{s:?} is not a label key (at most 63 of a-z, A-Z, 0-9, '-', '_' and '.', starting and ending alphanumeric, after an optional \"prefix/\")"
        ));
    }
    Ok(())
}

fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || label_chars(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a label value (at most 63 of a-z, A-Z, 0-9, '-', '_' and '.', starting and ending alphanumeric)"
        ))
    }
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileSpec, ConfigError> {
        join_file(toml::from_str(text).unwrap())
    }

    const GOOD: &str = r#"
api-server-endpoint = "10.0.0.10:6443"
token = "abcdef.0123456789abcdef"
ca-cert-hashes = ["sha256:0000000000000000000000000000000000000000000000000000000000000001"]
node-name = "worker-1"
labels = { "node.example.com/pool" = "blue", tier = "web" }
taint = [{ key = "dedicated", value = "gpu", effect = "NoSchedule" }]
"#;

    #[test]
    fn writes_the_join_configuration_field_by_field() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.path, PathBuf::from(JOIN_CONFIG));
        assert_eq!(f.mode, 0o600);
        let v: Value = serde_json::from_slice(&f.content).unwrap();
        assert_eq!(v["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(v["kind"], "JoinConfiguration");
        let t = &v["discovery"]["bootstrapToken"];
        assert_eq!(t["apiServerEndpoint"], "10.0.0.10:6443");
        assert_eq!(t["token"], "abcdef.0123456789abcdef");
        assert_eq!(t["caCertHashes"][0].as_str().unwrap().len(), 71);
        let r = &v["nodeRegistration"];
        assert_eq!(r["name"], "worker-1");
        assert_eq!(r["criSocket"], CRI_SOCKET);
        assert_eq!(r["taints"][0]["effect"], "NoSchedule");
        assert_eq!(
            r["kubeletExtraArgs"][0]["value"],
            "node.example.com/pool=blue,tier=web"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (change, want) in [
            (
                ("10.0.0.10:6443", "10.0.0.10"),
                "kubernetes.api-server-endpoint",
            ),
            (("abcdef.0123456789abcdef", "short.x"), "kubernetes.token"),
            (
                ("sha256:00000000", "md5:00000000"),
                "kubernetes.ca-cert-hashes[0]",
            ),
            (("worker-1", "Worker_1"), "kubernetes.node-name"),
            (("NoSchedule", "Never"), "kubernetes.taint[0].effect"),
            (("tier = ", "\"-tier\" = "), "kubernetes.labels"),
        ] {
            let text = GOOD.replacen(change.0, change.1, 1);
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{change:?}: {e}");
        }
        let e = parse(&GOOD.replace(
            "ca-cert-hashes = [\"sha256:0000000000000000000000000000000000000000000000000000000000000001\"]",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ca-cert-hashes") && e.contains("unsafe-skip-ca-verification"),
            "{e}"
        );
    }
}
