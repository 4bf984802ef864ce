//! A stand-in for kubelet, kubeadm, kubectl and crictl in CI, where the real binaries
//! cannot be downloaded. Built by tests/it/k8s_node.rs with rustc (static), served to the
//! build as the recipe's artifacts, and so installed by the real fetch, verify, lock and
//! install path. It says plainly what it is. Asked for its version, it answers with the
//! version the recipe pins (given when it is built: STANDIN_KUBERNETES_VERSION, and
//! STANDIN_CRICTL_VERSION for crictl) in the real program's words, and says it is a
//! stand-in. As kubeadm it records a `join` (its arguments, the configuration file it
//! was given and a count) under /var/lib/slipway-test, and writes
//! /etc/kubernetes/kubelet.conf as a successful join does.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args[0].rsplit('/').next().unwrap_or("?").to_string();
    let rest = args[1..].join(" ");
    if name == "kubeadm" && args.get(1).map(String::as_str) == Some("join") {
        let config = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default();
        let dir = "/var/lib/slipway-test";
        // A line per join in kubeadm-join.count, and kubelet.conf written as a
        // successful `kubeadm join` writes it: the join unit must not run again.
        let count = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("{dir}/kubeadm-join.count"))
                .and_then(|mut f| f.write_all(b"join\n"))
        };
        let saved = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(format!("{dir}/kubeadm-join.args"), format!("{rest}\n")))
            .and_then(|_| std::fs::copy(&config, format!("{dir}/kubeadm-join.config")).map(|_| ()))
            .and_then(|_| count())
            .and_then(|_| {
                std::fs::write(
                    "/etc/kubernetes/kubelet.conf",
                    "# written by the slipway stand-in kubeadm, not a real kubeconfig\n",
                )
            });
        match saved {
            Ok(()) => {
                println!("slipway stand-in kubeadm: join with {config} (not the real kubeadm)")
            }
            Err(e) => {
                eprintln!("slipway stand-in kubeadm: cannot record the join: {e}");
                std::process::exit(1);
            }
        }
    } else if args[1..].iter().any(|a| a == "version" || a == "--version") {
        let kube = option_env!("STANDIN_KUBERNETES_VERSION").unwrap_or("unknown");
        let crictl = option_env!("STANDIN_CRICTL_VERSION").unwrap_or("unknown");
        let line = match name.as_str() {
            "crictl" => format!("crictl version v{crictl}"),
            "kubectl" => format!("Client Version: v{kube}"),
            "kubeadm" => format!("kubeadm version: v{kube}"),
            _ => format!("Kubernetes v{kube}"),
        };
        println!("{line} (slipway stand-in {name}: not the real binary)");
    } else {
        println!("slipway stand-in {name} {rest}: not the real binary");
    }
    let _ = std::io::stdout().flush();
}
