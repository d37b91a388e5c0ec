//! Snapshots at scale (issue 15): 100,000 virtual keys and 1,000 models seeded by SQL on
//! PostgreSQL, 10 nodes; measures the snapshot build, the sealing per node, the transfer
//! size, the time until every node applied it and each node's apply time, then one
//! revocation: the time until every node refuses the key, the delta's size and the build
//! time of that change. Prints one `scale:` line per figure.
//!
//! Counts: `WARDEN_SCALE_KEYS` (default 100000), `WARDEN_SCALE_MODELS` (1000),
//! `WARDEN_SCALE_NODES` (10). For release figures, build the binaries with `--release`
//! and point `WARDEN_BIN_DIR` at `target/release`.

use std::time::{Duration, Instant};

use serde_json::Value;
use warden_proto::sync::v1 as pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{MODEL, TestCluster, eventually};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of `name=` on a log line.
fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Every log line with `message` and `version=<version>`.
fn lines_of(logs: &str, message: &str, version: u64) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(message) && field(l, "version") == Some(version as f64))
        .map(str::to_owned)
        .collect()
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql is needed to seed the scale test (postgresql-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

#[tokio::test]
async fn a_hundred_thousand_keys_reach_ten_nodes_and_one_revocation_travels_as_a_delta() {
    let started = Instant::now();
    let (keys, models, nodes) = (
        count("WARDEN_SCALE_KEYS", 100_000),
        count("WARDEN_SCALE_MODELS", 1_000),
        count("WARDEN_SCALE_NODES", 10),
    );
    let url = std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_DATABASE_URL is not set: run scripts/test.sh (CI has PostgreSQL on 127.0.0.1:5432)")
    });
    let mut c = TestCluster::start_with(
        0,
        warden_tests::cluster::Options {
            database_url: Some(url.clone()),
            ..warden_tests::cluster::Options::default()
        },
    )
    .await
    .unwrap();
    // The key that will be revoked, made through the Admin API while the store is small.
    let probe = c
        .ctl_ok(&["vkey", "create", "--name", "scale-probe"], None)
        .unwrap();
    let listed: Value =
        serde_json::from_str(&c.ctl_ok(&["vkey", "list", "-o", "json"], None).unwrap()).unwrap();
    let probe_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "scale-probe")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let schema = c.database_schema();
    let seeding = Instant::now();
    psql(
        &url,
        &format!(
            "INSERT INTO {schema}.virtual_keys (id, hash, name, owner, scopes, models, created_at, expires_at) \
             SELECT 'vk_scale' || i, md5('a' || i) || md5('b' || i), 'scale-' || i, 'team-' || (i % 100), \
                    '[]', '[\"*\"]', 0, 0 FROM generate_series(1, {keys}) AS i; \
             INSERT INTO {schema}.models (alias, provider, upstream_model, source, created_at) \
             SELECT 'scale-model-' || i, 'mock', 'mock-model-' || i, 'admin', 0 \
             FROM generate_series(1, {models}) AS i;"
        ),
    );
    println!(
        "scale: seeded {keys} virtual keys and {models} models by SQL in {:.0} ms",
        seeding.elapsed().as_secs_f64() * 1000.0
    );
    // Any admin change publishes a snapshot built from the whole store.
    c.ctl_ok(
        &["model", "add", "scale-trigger", "--provider", "mock"],
        None,
    )
    .unwrap();
    let logs = c.logs();
    let built: Vec<String> = logs
        .lines()
        .filter(|l| {
            l.contains("built snapshot") && field(l, "virtual_keys") == Some((keys + 1) as f64)
        })
        .map(str::to_owned)
        .collect();
    let build_line = built
        .last()
        .expect("no build of the seeded snapshot logged");
    let version = field(build_line, "version").unwrap() as u64;
    println!(
        "scale: snapshot build ({} keys, {} models): {:.0} ms",
        keys + 1,
        models + 3,
        field(build_line, "build_ms").unwrap()
    );

    // All nodes at once: the time until every one applied the full snapshot.
    let connecting = Instant::now();
    for _ in 0..nodes {
        c.spawn_node_unready().unwrap();
    }
    eventually(
        Duration::from_secs(120),
        "every node to apply the full snapshot",
        || async {
            for i in 0..nodes {
                if c.node_version(i).await? < version {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
    let all_applied = connecting.elapsed();
    let logs = c.logs();
    let sent = lines_of(&logs, "sending snapshot", version);
    let full_sent: Vec<&String> = sent
        .iter()
        .filter(|l| field(l, "base_version") == Some(0.0))
        .collect();
    assert!(full_sent.len() >= nodes, "{sent:?}");
    let seal = full_sent.iter().filter_map(|l| field(l, "seal_ms"));
    println!(
        "scale: full snapshot per node: {:.0} bytes encoded, prepared and sealed in {:.0} ms at most (all {} streams: {:.0} ms mean)",
        field(full_sent[0], "bytes").unwrap(),
        max(seal.clone()),
        full_sent.len(),
        seal.clone().sum::<f64>() / full_sent.len() as f64
    );
    let applied = lines_of(&logs, "applied snapshot", version);
    assert!(applied.len() >= nodes, "{applied:?}");
    println!(
        "scale: {nodes} nodes connected and applied the full snapshot in {:.0} ms; node apply time at most {:.0} ms",
        all_applied.as_secs_f64() * 1000.0,
        max(applied.iter().filter_map(|l| field(l, "apply_ms")))
    );

    // The probe key works everywhere, then one revocation.
    for i in 0..nodes {
        let r = c
            .chat(i, &probe, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "node {i}");
    }
    let revoking = Instant::now();
    c.ctl_ok(&["vkey", "revoke", &probe_id], None).unwrap();
    let refused_at = eventually(
        Duration::from_secs(10),
        "every node to refuse the revoked key",
        || async {
            for i in 0..nodes {
                let r = c
                    .chat(i, &probe, &TestCluster::chat_body(MODEL, "x", false))
                    .await
                    .ok()?;
                if r.status() != 401 {
                    return None;
                }
            }
            Some(revoking.elapsed())
        },
    )
    .await
    .unwrap();
    let logs = c.logs();
    let build = logs
        .lines()
        .rfind(|l| l.contains("built snapshot"))
        .unwrap()
        .to_owned();
    let revoked_version = field(&build, "version").unwrap() as u64;
    let deltas: Vec<String> = lines_of(&logs, "sending snapshot", revoked_version)
        .into_iter()
        .filter(|l| field(l, "base_version").is_some_and(|b| b > 0.0))
        .collect();
    assert!(
        deltas.len() >= nodes,
        "every node gets the revocation as a delta: {deltas:?}"
    );
    let applied = lines_of(&logs, "applied snapshot", revoked_version);
    println!(
        "scale: one revocation: every node refuses the key after {:.0} ms (wardenctl included); CP build {:.0} ms; delta {:.0} bytes, prepared and sealed in {:.1} ms at most; node apply at most {:.0} ms",
        refused_at.as_secs_f64() * 1000.0,
        field(&build, "build_ms").unwrap(),
        field(&deltas[0], "bytes").unwrap(),
        max(deltas.iter().filter_map(|l| field(l, "seal_ms"))),
        max(applied.iter().filter_map(|l| field(l, "apply_ms")))
    );
    // A revocation is small: a few hundred bytes, not the 100,000 keys again.
    assert!(field(&deltas[0], "bytes").unwrap() < 4096.0, "{deltas:?}");
    assert!(
        !logs.contains("resync"),
        "no node needed a resync in this test"
    );
    println!("scale: whole test {:.0} s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() < Duration::from_secs(180));
    let _ = std::process::Command::new("psql")
        .arg(&url)
        .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .output();
}

fn hello(
    node_id: &str,
    keys: &warden_core::seal::NodeKeyPair,
    credential: &str,
    deltas: bool,
) -> tonic::Request<pb::NodeHello> {
    let mut request = tonic::Request::new(pb::NodeHello {
        node_id: node_id.to_owned(),
        software_version: "e2e".to_owned(),
        have_version: 0,
        seal_public_key: keys.public_key().to_bytes().to_vec(),
        accepts_deltas: deltas,
    });
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

#[tokio::test]
async fn a_node_that_accepts_deltas_gets_a_full_snapshot_then_deltas_and_an_older_node_only_full_ones()
 {
    let c = TestCluster::start(0).await.unwrap();
    let keys = warden_core::seal::NodeKeyPair::generate().unwrap();
    let client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let watch = |id: &'static str, deltas: bool| {
        let request = hello(id, &keys, &c.node_token, deltas);
        let mut client = client.clone();
        async move { client.watch(request).await.unwrap().into_inner() }
    };
    let mut new_node = watch("delta-node", true).await;
    let mut old_node = watch("old-node", false).await;
    let first = next(&mut new_node).await;
    assert_eq!(
        first.base_version, 0,
        "the first message is a full snapshot"
    );
    assert!(first.sealed_vkey_pepper.is_some());
    assert_eq!(next(&mut old_node).await.base_version, 0);
    c.ctl_ok(&["vkey", "create", "--name", "delta-probe"], None)
        .unwrap();
    let delta = next(&mut new_node).await;
    assert_eq!(delta.base_version, first.version);
    assert!(delta.version > first.version);
    assert_eq!(delta.virtual_keys.len(), 1, "only the new key travels");
    assert!(delta.providers.is_empty() && delta.models.is_empty());
    assert!(
        delta.sealed_vkey_pepper.is_none(),
        "an unchanged pepper is not sealed again"
    );
    let full = next(&mut old_node).await;
    assert_eq!(full.base_version, 0, "an older node never gets a delta");
    assert!(full.sealed_vkey_pepper.is_some() && !full.providers.is_empty());
    // The delta released no secret: no `secret.release` row for it.
    let rows: Value = serde_json::from_str(
        &c.ctl_ok(
            &["audit", "list", "--action", "secret.release", "-o", "json"],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let of_delta_node = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "node:delta-node")
        .count();
    assert_eq!(of_delta_node, 1, "{rows}");
}

/// The next message of a watch stream.
async fn next(s: &mut tonic::Streaming<pb::Snapshot>) -> pb::Snapshot {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("no snapshot within 10 s")
        .unwrap()
        .expect("stream ended")
}
