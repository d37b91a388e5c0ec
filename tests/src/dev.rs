//! [`DevGateway`]: a `wardenctl dev` process started for a test — the whole gateway in one
//! process — with the `WARDEN_*` variables it printed once ready. Killed on drop.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::bin;

/// A running `wardenctl dev`.
#[derive(Debug)]
pub struct DevGateway {
    child: Child,
    /// What it printed as `WARDEN_…=value` lines (`WARDEN_URL`, `WARDEN_TOKEN`,
    /// `WARDEN_CP_ADDR`, `WARDEN_ADMIN_TOKEN`).
    pub vars: HashMap<String, String>,
}

impl DevGateway {
    /// Starts `wardenctl dev` keeping its state in `data_dir`, serving HTTP on `http` and
    /// gRPC on `grpc` (loopback), with no provider key or master key from the environment;
    /// its stderr goes to `stderr`. Returns once it printed its `curl` hint (at most 30 s).
    pub fn start(data_dir: &Path, http: u16, grpc: u16, stderr: Stdio) -> Self {
        let mut child = Command::new(bin("wardenctl").unwrap())
            .arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc}"))
            // Any free port: tests never read dev's metrics.
            .arg("--ops-addr")
            .arg("127.0.0.1:0")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("WARDEN_MASTER_KEY")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut vars = HashMap::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((k, v)) = line.split_once('=')
                    && k.starts_with("WARDEN_")
                {
                    vars.insert(k.to_owned(), v.to_owned());
                }
                if line.starts_with("curl ") {
                    let _ = tx.send(vars.clone());
                }
            }
        });
        let vars = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("wardenctl dev did not become ready");
        Self { child, vars }
    }
}

impl Drop for DevGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
