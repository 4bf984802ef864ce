//! `slipway-node check`: the node-readiness checks a kubeadm user runs before
//! `kubeadm join`. Consumes a root directory (`/`, or a fake tree in tests) and a CRI
//! socket path; produces one [`Outcome`] per check.
//!
//! What kubelet and kubeadm need is from the Kubernetes docs ("Container Runtimes":
//! forwarding IPv4 and letting iptables see bridged traffic; "About cgroup v2") and
//! kubeadm's preflight system validator (k8s.io/system-validators, `CgroupsV2`:
//! cpu, cpuset, devices, freezer, memory, pids; hugetlb and io optional). On cgroup v2
//! `devices` is an eBPF program and `freezer` is `cgroup.freeze` in every non-root
//! cgroup, so neither appears in `cgroup.controllers`; the four real controllers are
//! checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cri;

/// Programs kubeadm's preflight and kubelet look up in PATH on a node.
pub const REQUIRED_BINARIES: [&str; 10] = [
    "kubelet",
    "kubeadm",
    "containerd",
    "runc",
    "conntrack",
    "iptables",
    "socat",
    "ethtool",
    "ebtables",
    "ip",
];

/// cgroup v2 controllers kubelet needs in `cgroup.controllers` and enabled for child
/// cgroups in the root's `cgroup.subtree_control`.
pub const REQUIRED_CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "pids"];

/// Controllers kubeadm's validator reports as optional.
pub const OPTIONAL_CONTROLLERS: [&str; 2] = ["hugetlb", "io"];

/// kubelet's API port.
pub const KUBELET_PORT: u16 = 10250;

/// The CRI socket kubeadm assumes for containerd.
pub const DEFAULT_CRI_SOCKET: &str = "/run/containerd/containerd.sock";

/// Where the checks look.
pub struct Ctx {
    /// `/` on a node; a fake tree with `proc/`, `sys/`, `usr/bin/`... in tests.
    pub root: PathBuf,
    pub cri_socket: PathBuf,
    /// PATH to search for binaries (each entry taken relative to `root`).
    pub path: String,
    pub cri_timeout: Duration,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome {
        name,
        ok: true,
        detail: detail.into(),
    }
}

fn fail(name: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome {
        name,
        ok: false,
        detail: detail.into(),
    }
}

impl Ctx {
    fn p(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn read(&self, abs: &str) -> Result<String, String> {
        fs::read_to_string(self.p(abs)).map_err(|e| format!("reading {abs}: {e}"))
    }
}

/// Runs every check, in a fixed order.
pub fn run_all(ctx: &Ctx) -> Vec<Outcome> {
    vec![
        swap(ctx),
        sysctl(ctx, "ip_forward", "/proc/sys/net/ipv4/ip_forward", false),
        sysctl(
            ctx,
            "bridge-nf-call-iptables",
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
            true,
        ),
        cgroup2(ctx),
        cgroup_controllers(ctx),
        module(ctx, "overlay"),
        module(ctx, "br_netfilter"),
        cri_runtime(ctx),
        binaries(ctx),
        port(ctx),
    ]
}

/// Swap must be off: /proc/swaps lists no device after its header line.
pub fn swap(ctx: &Ctx) -> Outcome {
    const NAME: &str = "swap";
    match ctx.read("/proc/swaps") {
        Err(e) => fail(NAME, e),
        Ok(t) => {
            let active: Vec<&str> = t
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            if active.is_empty() {
                pass(NAME, "off (/proc/swaps lists no device)")
            } else {
                fail(
                    NAME,
                    format!(
                        "on: {} (kubelet refuses swap by default; swapoff -a and remove it from /etc/fstab)",
                        active.join(", ")
                    ),
                )
            }
        }
    }
}

/// A sysctl that must read 1.
pub fn sysctl(ctx: &Ctx, name: &'static str, file: &str, bridge: bool) -> Outcome {
    let key = file.trim_start_matches("/proc/sys/").replace('/', ".");
    match fs::read_to_string(ctx.p(file)) {
        Ok(v) if v.trim() == "1" => pass(name, format!("{key} = 1")),
        Ok(v) => fail(
            name,
            format!("{key} = {} (set it to 1 in /etc/sysctl.d/)", v.trim()),
        ),
        Err(e) if bridge && e.kind() == std::io::ErrorKind::NotFound => fail(
            name,
            format!("{key} does not exist (br_netfilter is not loaded)"),
        ),
        Err(e) => fail(name, format!("reading {file}: {e}")),
    }
}

/// The file system type mounted last on `mountpoint`, from /proc/mounts.
fn mount_type(ctx: &Ctx, mountpoint: &str) -> Result<Option<String>, String> {
    let t = ctx.read("/proc/mounts")?;
    Ok(t.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mp, ty) = (f.next()?, f.next()?, f.next()?);
            (mp == mountpoint).then(|| ty.to_string())
        })
        .next_back())
}

/// /sys/fs/cgroup must be the cgroup v2 (unified) hierarchy.
pub fn cgroup2(ctx: &Ctx) -> Outcome {
    const NAME: &str = "cgroup2";
    match mount_type(ctx, "/sys/fs/cgroup") {
        Err(e) => fail(NAME, e),
        Ok(Some(t)) if t == "cgroup2" => pass(NAME, "/sys/fs/cgroup is cgroup2"),
        Ok(Some(t)) => fail(
            NAME,
            format!(
                "/sys/fs/cgroup is {t}, not cgroup2 (cgroup v1 or hybrid; boot with systemd.unified_cgroup_hierarchy=1)"
            ),
        ),
        Ok(None) => fail(NAME, "nothing is mounted on /sys/fs/cgroup"),
    }
}

fn words(ctx: &Ctx, file: &str) -> Result<Vec<String>, String> {
    Ok(ctx
        .read(file)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The controllers kubelet needs: available at the root and enabled for its children.
pub fn cgroup_controllers(ctx: &Ctx) -> Outcome {
    const NAME: &str = "cgroup-controllers";
    if !matches!(mount_type(ctx, "/sys/fs/cgroup"), Ok(Some(t)) if t == "cgroup2") {
        return fail(NAME, "no cgroup v2 hierarchy on /sys/fs/cgroup");
    }
    let avail = match words(ctx, "/sys/fs/cgroup/cgroup.controllers") {
        Ok(w) => w,
        Err(e) => return fail(NAME, e),
    };
    let enabled = match words(ctx, "/sys/fs/cgroup/cgroup.subtree_control") {
        Ok(w) => w,
        Err(e) => return fail(NAME, e),
    };
    let missing: Vec<&str> = REQUIRED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !avail.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        return fail(
            NAME,
            format!(
                "missing from cgroup.controllers: {} (kernel or boot options disable them)",
                missing.join(", ")
            ),
        );
    }
    let off: Vec<&str> = REQUIRED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|a| a == c))
        .collect();
    if !off.is_empty() {
        let plus: Vec<String> = off.iter().map(|c| format!("+{c}")).collect();
        return fail(
            NAME,
            format!(
                "not enabled in cgroup.subtree_control: {} (echo '{}' > /sys/fs/cgroup/cgroup.subtree_control)",
                off.join(", "),
                plus.join(" ")
            ),
        );
    }
    let optional: Vec<&str> = OPTIONAL_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| avail.iter().any(|a| a == c))
        .collect();
    pass(
        NAME,
        format!(
            "{} enabled{}",
            REQUIRED_CONTROLLERS.join(" "),
            if optional.is_empty() {
                String::new()
            } else {
                format!(" (optional: {})", optional.join(" "))
            }
        ),
    )
}

/// A kernel module is loaded (/sys/module/NAME), listed as built in
/// (/lib/modules/RELEASE/modules.builtin), or shows the feature only it provides (a
/// built-in module without parameters has no /sys/module entry).
pub fn module(ctx: &Ctx, name: &'static str) -> Outcome {
    if ctx.p(&format!("/sys/module/{name}")).is_dir() {
        return pass(name, format!("loaded (/sys/module/{name})"));
    }
    if let Ok(release) = ctx.read("/proc/sys/kernel/osrelease") {
        let builtin = format!("/lib/modules/{}/modules.builtin", release.trim());
        if let Ok(list) = ctx.read(&builtin) {
            let ko = format!("/{name}.ko");
            if list.lines().any(|l| l.ends_with(&ko)) {
                return pass(name, format!("built in ({builtin})"));
            }
        }
    }
    let feature = match name {
        "overlay" => ctx
            .read("/proc/filesystems")
            .is_ok_and(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            })
            .then_some("overlay is in /proc/filesystems"),
        "br_netfilter" => ctx
            .p("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .exists()
            .then_some("net.bridge.bridge-nf-call-iptables exists"),
        _ => None,
    };
    match feature {
        Some(f) => pass(name, format!("built in ({f})")),
        None => fail(
            name,
            format!("not loaded (modprobe {name}; list it in /etc/modules-load.d/)"),
        ),
    }
}

/// The CRI socket answers Version and Status, with RuntimeReady and NetworkReady true.
pub fn cri_runtime(ctx: &Ctx) -> Outcome {
    const NAME: &str = "cri";
    let sock = &ctx.cri_socket;
    let mut c = match cri::Client::connect(sock, ctx.cri_timeout) {
        Ok(c) => c,
        Err(e) => return fail(NAME, e.to_string()),
    };
    let v = match c.version() {
        Ok(v) => v,
        Err(e) => return fail(NAME, format!("{}: {e}", sock.display())),
    };
    let conds = match c.status() {
        Ok(s) => s,
        Err(e) => return fail(NAME, format!("{}: {e}", sock.display())),
    };
    let who = format!(
        "{} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    let mut bad = Vec::new();
    for want in ["RuntimeReady", "NetworkReady"] {
        match conds.iter().find(|c| c.kind == want) {
            Some(c) if c.status => {}
            Some(c) => bad.push(format!("{want}=false ({}: {})", c.reason, c.message)),
            None => bad.push(format!("{want} not reported")),
        }
    }
    if bad.is_empty() {
        pass(NAME, format!("{who}: RuntimeReady, NetworkReady"))
    } else {
        fail(NAME, format!("{who}: {}", bad.join("; ")))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every program in [`REQUIRED_BINARIES`] is in PATH.
pub fn binaries(ctx: &Ctx) -> Outcome {
    const NAME: &str = "binaries";
    let dirs: Vec<&str> = ctx.path.split(':').filter(|d| !d.is_empty()).collect();
    let missing: Vec<&str> = REQUIRED_BINARIES
        .iter()
        .copied()
        .filter(|b| !dirs.iter().any(|d| is_executable(&ctx.p(d).join(b))))
        .collect();
    if missing.is_empty() {
        pass(
            NAME,
            format!("all in PATH: {}", REQUIRED_BINARIES.join(" ")),
        )
    } else {
        fail(
            NAME,
            format!("not in PATH ({}): {}", ctx.path, missing.join(", ")),
        )
    }
}

/// Nothing listens on kubelet's port, per /proc/net/tcp and tcp6 (the `st` column 0A is
/// LISTEN; the local address ends in the port in hex).
pub fn port(ctx: &Ctx) -> Outcome {
    const NAME: &str = "port-10250";
    let mut seen = false;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(t) = ctx.read(f) else { continue };
        seen = true;
        for l in t.lines().skip(1) {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if cols[3] == "0A" && port == Some(KUBELET_PORT) {
                return fail(
                    NAME,
                    format!(
                        "in use: a socket listens on {KUBELET_PORT} ({f}, inode {})",
                        cols[9]
                    ),
                );
            }
        }
    }
    if seen {
        pass(NAME, format!("nothing listens on {KUBELET_PORT}"))
    } else {
        fail(NAME, "cannot read /proc/net/tcp or /proc/net/tcp6")
    }
}

/// The outcomes as JSON: `{"ok": bool, "checks": [{"name", "ok", "detail"}]}`.
pub fn to_json(out: &[Outcome]) -> String {
    fn esc(s: &str) -> String {
        let mut o = String::with_capacity(s.len() + 2);
        o.push('"');
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        o
    }
    let items: Vec<String> = out
        .iter()
        .map(|o| {
            format!(
                "{{\"name\":{},\"ok\":{},\"detail\":{}}}",
                esc(o.name),
                o.ok,
                esc(&o.detail)
            )
        })
        .collect();
    format!(
        "{{\"ok\":{},\"checks\":[{}]}}",
        out.iter().all(|o| o.ok),
        items.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake root where every check passes (except cri, which needs a socket).
    fn good_root() -> (tempdir::Dir, Ctx) {
        let d = tempdir::Dir::new();
        let r = d.path();
        let w = |p: &str, s: &str| {
            let p = r.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, s).unwrap();
        };
        w(
            "proc/swaps",
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        );
        w("proc/sys/net/ipv4/ip_forward", "1\n");
        w("proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
        w(
            "proc/mounts",
            "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
        );
        w(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        w(
            "sys/fs/cgroup/cgroup.subtree_control",
            "cpuset cpu io memory pids\n",
        );
        fs::create_dir_all(r.join("sys/module/overlay")).unwrap();
        fs::create_dir_all(r.join("sys/module/br_netfilter")).unwrap();
        w(
            "proc/net/tcp",
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0\n   1: 0100007F:280A 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n",
        );
        for b in REQUIRED_BINARIES {
            w(&format!("usr/bin/{b}"), "#!/bin/sh\n");
            fs::set_permissions(r.join("usr/bin").join(b), fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let ctx = Ctx {
            root: r.to_path_buf(),
            cri_socket: r.join("run/containerd/containerd.sock"),
            path: "/usr/sbin:/usr/bin".into(),
            cri_timeout: Duration::from_secs(2),
        };
        (d, ctx)
    }

    fn outcome(ctx: &Ctx, name: &str) -> Outcome {
        run_all(ctx).into_iter().find(|o| o.name == name).unwrap()
    }

    #[test]
    fn good_root_passes_all_but_cri() {
        let (_d, ctx) = good_root();
        for o in run_all(&ctx) {
            assert_eq!(o.ok, o.name != "cri", "{o:?}");
        }
    }

    #[test]
    fn swap_on_fails() {
        let (_d, ctx) = good_root();
        fs::write(
            ctx.root.join("proc/swaps"),
            "Filename Type Size Used Priority\n/dev/vda3 partition 1048572 0 -2\n",
        )
        .unwrap();
        let o = outcome(&ctx, "swap");
        assert!(!o.ok && o.detail.contains("/dev/vda3"), "{o:?}");
    }

    #[test]
    fn ip_forward_off_fails() {
        let (_d, ctx) = good_root();
        fs::write(ctx.root.join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        let o = outcome(&ctx, "ip_forward");
        assert!(
            !o.ok && o.detail.contains("net.ipv4.ip_forward = 0"),
            "{o:?}"
        );
    }

    #[test]
    fn bridge_nf_off_or_missing_fails() {
        let (_d, ctx) = good_root();
        let f = ctx.root.join("proc/sys/net/bridge/bridge-nf-call-iptables");
        fs::write(&f, "0\n").unwrap();
        assert!(!outcome(&ctx, "bridge-nf-call-iptables").ok);
        fs::remove_file(&f).unwrap();
        let o = outcome(&ctx, "bridge-nf-call-iptables");
        assert!(!o.ok && o.detail.contains("br_netfilter"), "{o:?}");
    }

    #[test]
    fn cgroup_v1_fails() {
        let (_d, ctx) = good_root();
        fs::write(
            ctx.root.join("proc/mounts"),
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n",
        )
        .unwrap();
        let o = outcome(&ctx, "cgroup2");
        assert!(!o.ok && o.detail.contains("tmpfs"), "{o:?}");
        assert!(!outcome(&ctx, "cgroup-controllers").ok);
    }

    #[test]
    fn missing_or_disabled_controller_fails() {
        let (_d, ctx) = good_root();
        let sub = ctx.root.join("sys/fs/cgroup/cgroup.subtree_control");
        fs::write(&sub, "cpu io memory pids\n").unwrap();
        let o = outcome(&ctx, "cgroup-controllers");
        assert!(
            !o.ok && o.detail.contains("subtree_control: cpuset"),
            "{o:?}"
        );
        fs::write(
            ctx.root.join("sys/fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory\n",
        )
        .unwrap();
        let o = outcome(&ctx, "cgroup-controllers");
        assert!(
            !o.ok && o.detail.contains("cgroup.controllers: pids"),
            "{o:?}"
        );
    }

    #[test]
    fn modules_not_loaded_fail_and_builtin_passes() {
        let (_d, ctx) = good_root();
        fs::remove_dir(ctx.root.join("sys/module/overlay")).unwrap();
        fs::remove_dir(ctx.root.join("sys/module/br_netfilter")).unwrap();
        assert!(!outcome(&ctx, "overlay").ok);
        // bridge-nf-call-iptables still exists: br_netfilter is built in.
        assert!(outcome(&ctx, "br_netfilter").ok);
        fs::remove_file(ctx.root.join("proc/sys/net/bridge/bridge-nf-call-iptables")).unwrap();
        let o = outcome(&ctx, "br_netfilter");
        assert!(!o.ok && o.detail.contains("modprobe br_netfilter"), "{o:?}");
        // modules.builtin for the running release.
        fs::create_dir_all(ctx.root.join("proc/sys/kernel")).unwrap();
        fs::write(ctx.root.join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        fs::create_dir_all(ctx.root.join("lib/modules/6.1.0-test")).unwrap();
        fs::write(
            ctx.root.join("lib/modules/6.1.0-test/modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .unwrap();
        assert!(outcome(&ctx, "overlay").ok);
        // /proc/filesystems naming overlay is enough on its own.
        fs::remove_file(ctx.root.join("lib/modules/6.1.0-test/modules.builtin")).unwrap();
        assert!(!outcome(&ctx, "overlay").ok);
        fs::write(
            ctx.root.join("proc/filesystems"),
            "nodev\tproc\nnodev\toverlay\n",
        )
        .unwrap();
        assert!(outcome(&ctx, "overlay").ok);
    }

    #[test]
    fn cri_socket_missing_or_not_grpc_fails() {
        let (_d, ctx) = good_root();
        let o = outcome(&ctx, "cri");
        assert!(!o.ok && o.detail.contains("connecting to"), "{o:?}");
        // A socket that accepts and closes at once is not a CRI runtime.
        let sock = ctx.root.join("cri.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(1) {
                drop(s);
            }
        });
        let ctx = Ctx {
            cri_socket: sock,
            ..ctx
        };
        assert!(!outcome(&ctx, "cri").ok);
    }

    #[test]
    fn missing_binary_fails() {
        let (_d, ctx) = good_root();
        fs::remove_file(ctx.root.join("usr/bin/kubelet")).unwrap();
        fs::set_permissions(
            ctx.root.join("usr/bin/socat"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let o = outcome(&ctx, "binaries");
        assert!(!o.ok && o.detail.ends_with(": kubelet, socat"), "{o:?}");
    }

    #[test]
    fn port_in_use_fails() {
        let (_d, ctx) = good_root();
        fs::write(
            ctx.root.join("proc/net/tcp6"),
            "  sl  local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n   0: 00000000000000000000000000000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4242 1 0 100 0 0 10 0\n",
        )
        .unwrap();
        let o = outcome(&ctx, "port-10250");
        assert!(!o.ok && o.detail.contains("inode 4242"), "{o:?}");
    }

    #[test]
    fn json_is_well_formed() {
        let j = to_json(&[pass("a", "x \"q\"\n"), fail("b", "y\\z")]);
        assert_eq!(
            j,
            r#"{"ok":false,"checks":[{"name":"a","ok":true,"detail":"x \"q\"\n"},{"name":"b","ok":false,"detail":"y\\z"}]}"#
        );
    }

    /// A temporary directory removed on drop (no tempfile crate in this package).
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "slipway-node-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
