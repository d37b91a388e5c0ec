//! `deploy/config/warden-dp.env`, the data-plane example (`warden-dp` takes no config file,
//! only flags and environment): every variable in it is one `warden-dp` knows, and a node
//! started with it joins a real control plane, serves, and reports its id. Only what must
//! point at this test's cluster is replaced: listen addresses, control-plane URL (plain
//! loopback, so the CA file is not read), the node credential file, the spool directory,
//! the API's certificate and key (from a throwaway CA), the Redis URL and prefix (the test
//! Redis, a private prefix), and the egress allow-list (the mock provider's host). The `warden-cp`
//! examples are tested in `control-plane/tests/deploy_config.rs`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use warden_tests::cluster::{MODEL, Options, TestCluster, bin, eventually, free_port};

fn example() -> BTreeMap<String, String> {
    let path = format!(
        "{}/../deploy/config/warden-dp.env",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("warden-dp.env:{}: not KEY=VALUE", i + 1));
        assert!(
            key.starts_with("WARDEN_") && !value.starts_with(['"', '\'']),
            "warden-dp.env:{}: KEY=VALUE without quotes or export",
            i + 1
        );
        assert!(
            vars.insert(key.to_owned(), value.to_owned()).is_none(),
            "warden-dp.env:{}: {key} twice",
            i + 1
        );
    }
    vars
}

#[test]
fn every_variable_in_the_example_is_one_warden_dp_reads() {
    let help = Command::new(bin("warden-dp").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let vars = example();
    assert!(vars.len() >= 10, "{vars:?}");
    for key in vars.keys() {
        assert!(
            help.contains(key.as_str()),
            "warden-dp.env sets {key}, which `warden-dp --help` does not mention"
        );
    }
}

#[tokio::test]
async fn a_node_configured_by_the_example_joins_the_control_plane_and_serves() {
    let redis = std::env::var("WARDEN_TEST_REDIS_URL")
        .expect("WARDEN_TEST_REDIS_URL is not set (scripts/test.sh exports it)");
    let c = TestCluster::start_with(
        0,
        Options {
            redis_url: Some(redis.clone()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut vars = example();
    let node_id = vars["WARDEN_NODE_ID"].clone();
    let port = free_port().unwrap();
    let ops_port = free_port().unwrap();
    let token_file = c.dir.path().join("node-token");
    std::fs::write(&token_file, &c.node_token).unwrap();
    let ca = warden_tests::pki::TestCa::new().unwrap();
    let (cert_file, key_file) = (c.dir.path().join("node.pem"), c.dir.path().join("node.key"));
    ca.server_cert(1)
        .unwrap()
        .install(&cert_file, &key_file)
        .unwrap();
    for (key, value) in [
        ("WARDEN_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("WARDEN_OPS_ADDR", format!("127.0.0.1:{ops_port}")),
        ("WARDEN_CP_ADDR", c.cp_addr()),
        ("WARDEN_NODE_TOKEN_FILE", token_file.display().to_string()),
        (
            "WARDEN_AUDIT_SPOOL_DIR",
            c.spool_dir(&node_id).display().to_string(),
        ),
        ("WARDEN_REDIS_URL", redis),
        // The mock provider's host, named on the allow-list (so its loopback address is
        // allowed).
        ("WARDEN_EGRESS_ALLOW", "127.0.0.1".to_owned()),
        ("WARDEN_REDIS_PREFIX", c.redis_prefix.clone()),
        ("WARDEN_HTTP_TLS_CERT_FILE", cert_file.display().to_string()),
        ("WARDEN_HTTP_TLS_KEY_FILE", key_file.display().to_string()),
    ] {
        assert!(
            vars.insert(key.to_owned(), value).is_some(),
            "warden-dp.env no longer sets {key}"
        );
    }
    let log = c.dir.path().join("logs").join("warden-dp-example.log");
    let mut node = Command::new(bin("warden-dp").unwrap())
        .env_clear()
        .envs(&vars)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let ready = eventually(
        Duration::from_secs(20),
        "the example node to be ready",
        || {
            let (http, url) = (
                c.http.clone(),
                format!("http://127.0.0.1:{ops_port}/readyz"),
            );
            let exited = node.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    return Some(Err(format!("warden-dp exited ({status})")));
                }
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(Ok(()))
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = ready {
        let _ = node.kill();
        panic!("{e}; warden-dp's log:\n{logs}");
    }
    let token = c.issue_token("deploy-example", MODEL).unwrap();
    let r = ca
        .reqwest_client()
        .unwrap()
        .build()
        .unwrap()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "hello", false))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let hsts = r.headers().get("strict-transport-security").cloned();
    let body = r.text().await.unwrap_or_default();
    let nodes: serde_json::Value =
        serde_json::from_str(&c.ctl_ok(&["nodes", "-o", "json"], None).unwrap()).unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert_eq!(status, 200, "{body}");
    assert_eq!(hsts.unwrap(), "max-age=31536000");
    assert!(
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"] == node_id.as_str()),
        "{nodes}"
    );
    // WARDEN_LOG_FORMAT=json from the example.
    let first = logs.lines().next().unwrap_or_default();
    assert!(first.starts_with('{'), "not a JSON log line: {first}");
}
