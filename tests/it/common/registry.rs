//! A real registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
//! one process per test with its own storage, killed on drop.

use super::free_port;
use serde_json::Value;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A docker-registry process with its own storage; killed on drop.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; `auth` is the YAML of its `auth:` section (indented two spaces).
    pub fn start(auth: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian: docker-registry; run scripts/setup-host.sh)");
        let mut r = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Any HTTP answer (200 or 401) means it serves.
                match ureq::get(&format!("http://127.0.0.1:{port}/v2/")).call() {
                    Ok(_) | Err(ureq::Error::Status(..)) => return r,
                    Err(_) => {}
                }
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("docker-registry exited ({st}): {}", r.log());
            }
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn anonymous() -> Registry {
        Registry::start("")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where it keeps its blobs and manifests (the filesystem driver's root).
    pub fn storage(&self) -> std::path::PathBuf {
        self._dir.path().join("storage")
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Repositories in the registry (anonymous registries only).
    pub fn catalog(&self) -> Vec<String> {
        let v: Value = ureq::get(&format!("http://{}/v2/_catalog", self.host()))
            .call()
            .unwrap()
            .into_string()
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap();
        v["repositories"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
