//! `wardenctl dev`: one command, a working gateway, state kept across restarts.

use std::process::{Command, Stdio};

use serde_json::Value;
use warden_tests::cluster::{bin, free_port};
use warden_tests::dev::DevGateway;

fn start_dev(data_dir: &std::path::Path, http: u16, grpc: u16) -> DevGateway {
    DevGateway::start(data_dir, http, grpc, Stdio::null())
}

async fn echo(http: &reqwest::Client, dev: &DevGateway, text: &str) -> reqwest::Response {
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
