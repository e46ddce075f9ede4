//! A real `nats-server` with JetStream on loopback, on a port it picks, with its own store
//! dir; killed on drop. `scripts/test-setup.sh` installs the Debian package `nats-server`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!(
                    "nats-server not found: install the Debian package nats-server \
                     (scripts/test-setup.sh, which the README's test command runs, does)"
                )
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("nats.log");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path().join("store"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        // "Listening for client connections on 127.0.0.1:PORT", then "Server is ready".
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                let port = text
                    .lines()
                    .find_map(|l| l.split("client connections on ").nth(1))
                    .map(str::trim)
                    .expect("nats-server's listen line");
                break format!("nats://{port}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
