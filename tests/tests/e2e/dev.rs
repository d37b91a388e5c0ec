//! `wardenctl dev`: one command, a working gateway, state kept across restarts.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use warden_tests::cluster::{bin, free_port};

struct Dev {
    child: Child,
    vars: std::collections::HashMap<String, String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(data_dir: &std::path::Path, http: u16, grpc: u16) -> Dev {
    let mut child = Command::new(bin("wardenctl").unwrap())
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{grpc}"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("WARDEN_MASTER_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut vars = std::collections::HashMap::new();
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
    Dev { child, vars }
}

async fn echo(http: &reqwest::Client, dev: &Dev, text: &str) -> reqwest::Response {
    http.post(format!("{}/chat/completions", dev.vars["WARDEN_URL"]))
        .bearer_auth(&dev.vars["WARDEN_TOKEN"])
        .json(
            &serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": text}]}),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn dev_runs_a_gateway_that_answers_offline_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(".warden");
    let (http_port, grpc_port) = (free_port().unwrap(), free_port().unwrap());
    let http = reqwest::Client::new();
    let dev = start_dev(&data, http_port, grpc_port);
    for var in [
        "WARDEN_URL",
        "WARDEN_TOKEN",
        "WARDEN_CP_ADDR",
        "WARDEN_ADMIN_TOKEN",
    ] {
        assert!(dev.vars.contains_key(var), "{var} not printed");
    }
    let r = echo(&http, &dev, "hello offline").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello offline"
    );

    // The printed admin credential works with wardenctl; make some state.
    let ctl = |args: &[&str], vars: &std::collections::HashMap<String, String>| {
        Command::new(bin("wardenctl").unwrap())
            .args(args)
            .env("WARDEN_CP_ADDR", &vars["WARDEN_CP_ADDR"])
            .env("WARDEN_ADMIN_TOKEN", &vars["WARDEN_ADMIN_TOKEN"])
            .output()
            .unwrap()
    };
    let out = ctl(&["vkey", "create", "--name", "survives-restart"], &dev.vars);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let old_admin = dev.vars["WARDEN_ADMIN_TOKEN"].clone();
    drop(dev);

    let dev = start_dev(&data, http_port, grpc_port);
    // A new client: the old one pools connections to the process that was just killed.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/chat/completions", dev.vars["WARDEN_URL"]))
        .bearer_auth(&vkey)
        .json(&serde_json::json!({"model": "echo", "stream": true, "messages": [{"role": "user", "content": "again"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the virtual key did not survive the restart"
    );
    assert!(r.text().await.unwrap().contains("data: [DONE]"));
    // The previous session's admin credential was replaced.
    let mut stale = dev.vars.clone();
    stale.insert("WARDEN_ADMIN_TOKEN".into(), old_admin);
    assert!(!ctl(&["nodes"], &stale).status.success());
    let out = ctl(&["nodes", "-o", "json"], &dev.vars);
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes["nodes"][0]["node_id"], "dev-node");
}
