//! What the control plane trusts in its state store: a PostgreSQL server off loopback is
//! refused at start without `sslmode=verify-full`/`verify-ca` (before any connection; the
//! dangerous-setting flag lets it go on), and a provider row whose `base_url` breaks the
//! rules — written straight into the database, as a man in the middle could — never reaches
//! a node: the next snapshot leaves it (and its models) out, and the refusal is audited.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use warden_control_plane::store::StateStore as _;
use warden_proto::sync::v1 as sync_pb;
use warden_proto::sync::v1::sync_client::SyncClient;
use warden_tests::cluster::{CLAUDE_MODEL, MODEL, OTHER_MODEL, TestCluster, bin};

/// Runs `warden-cp` against `database_url` with `extra` arguments until it exits (at most
/// 40 s); returns whether it succeeded and its stderr.
fn start_cp_on(database_url: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("warden-cp").unwrap())
        .args(["--grpc-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(extra)
        .env_clear()
        .env(
            "WARDEN_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("WARDEN_DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warden-cp was still running after 40 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    (status.success(), stderr)
}

#[tokio::test]
async fn postgres_off_loopback_needs_verified_tls_unless_explicitly_allowed() {
    let url = "postgres://warden:s3cret-pw@db.invalid/test?sslmode=require";
    let (ok, stderr) = tokio::task::spawn_blocking(move || start_cp_on(url, &[]))
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        stderr.contains("verify-full") && stderr.contains("db.invalid"),
        "the refusal names the fix: {stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    // With the dangerous-setting flag it goes on to connect (and fails on the name).
    let (ok, stderr) =
        tokio::task::spawn_blocking(move || start_cp_on(url, &["--allow-unverified-db-tls"]))
            .await
            .unwrap();
    assert!(!ok, "db.invalid cannot be reached");
    assert!(
        !stderr.contains("does not verify its certificate"),
        "{stderr}"
    );
    assert!(
        stderr.contains("without certificate verification"),
        "the dangerous setting is warned about: {stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

fn hello(node_id: &str, key: Vec<u8>, credential: &str) -> tonic::Request<sync_pb::NodeHello> {
    let mut request = tonic::Request::new(sync_pb::NodeHello {
        node_id: node_id.to_owned(),
        software_version: "e2e".to_owned(),
        have_version: 0,
        seal_public_key: key,
        accepts_deltas: false,
    });
    let value: MetadataValue<_> = format!("Bearer {credential}").parse().unwrap();
    request
        .metadata_mut()
        .insert(warden_proto::AUTHORIZATION, value);
    request
}

#[tokio::test]
async fn a_provider_row_rewritten_in_the_database_is_left_out_of_snapshots() {
    let c = TestCluster::start(0).await.unwrap();
    // A man in the middle of the database link rewrites the provider's base_url.
    let store = warden_control_plane::store::sqlite::SqliteStore::open(
        &c.dir.path().join("cp-data").join("state.db"),
    )
    .await
    .unwrap();
    let mut row = store
        .list_providers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "mock")
        .unwrap();
    row.base_url = "http://collector.invalid/v1".into();
    store.upsert_provider(&row).await.unwrap();
    drop(store);
    // The next change publishes a snapshot built from the store.
    c.ctl_ok(
        &[
            "model",
            "add",
            "claude-extra",
            "--provider",
            "mock-anthropic",
        ],
        None,
    )
    .unwrap();

    let keys = warden_core::seal::NodeKeyPair::generate().unwrap();
    let mut client = SyncClient::connect(c.cp_addr()).await.unwrap();
    let snapshot = client
        .watch(hello(
            "watcher",
            keys.public_key().to_bytes().to_vec(),
            &c.node_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let providers: Vec<(&str, &str)> = snapshot
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.base_url.as_str()))
        .collect();
    assert!(
        providers
            .iter()
            .all(|(_, url)| !url.contains("collector.invalid")),
        "the rewritten base_url reached a node: {providers:?}"
    );
    assert!(providers.iter().any(|(n, _)| *n == "mock-anthropic"));
    let models: Vec<&str> = snapshot.models.iter().map(|m| m.alias.as_str()).collect();
    assert!(
        !models.contains(&MODEL) && !models.contains(&OTHER_MODEL),
        "models of the refused provider go with it: {models:?}"
    );
    assert!(models.contains(&CLAUDE_MODEL) && models.contains(&"claude-extra"));
    let rows = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "provider.snapshot_refused",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    assert!(rows.contains("\"mock\""), "the refusal is audited: {rows}");
    assert!(!rows.contains("collector.invalid"), "{rows}");
}
