//! A provider's own CA bundle (`wardenctl provider add --upstream-ca-file`), against real
//! processes and a mock provider serving HTTPS with a certificate from a private CA: with
//! the bundle the node reaches it; without it (the public roots) or with another private
//! CA's bundle the handshake fails, the client gets a 502 `upstream_tls_failed` in the
//! OpenAI error shape, the audit says so, and the upstream key never left the node. A file
//! that is not PEM is refused by the CLI before anything is sent.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use warden_tests::cluster::{TestCluster, eventually};
use warden_tests::mock::MockUpstream;
use warden_tests::pki::TestCa;

/// SHA-256 (hex) of the DER of the certificate in `pem`, by `sha256sum` (not Warden's code).
fn sha256_of_pem(dir: &std::path::Path, pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let path = dir.join("cert.der");
    std::fs::write(&path, der.as_ref()).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Adds provider `name` at `base_url` (with `extra` flags), one key and model `<name>-model`.
fn add_provider(c: &TestCluster, name: &str, base_url: &str, key: &str, extra: &[&str]) {
    let mut args = vec![
        "provider",
        "add",
        name,
        "--format",
        "openai",
        "--base-url",
        base_url,
    ];
    args.extend_from_slice(extra);
    c.ctl_ok(&args, None).unwrap();
    c.ctl_ok(&["provider", "key", "add", name], Some(key))
        .unwrap();
    let model = format!("{name}-model");
    c.ctl_ok(&["model", "add", &model, "--provider", name], None)
        .unwrap();
}

/// A chat completion for `model` once the node knows it: status and JSON body.
async fn chat(c: &TestCluster, token: &str, model: &str) -> (u16, Value) {
    eventually(
        Duration::from_secs(15),
        "the node to know the model",
        || async {
            let r = c
                .chat(0, token, &TestCluster::chat_body(model, "hello", false))
                .await
                .ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            (body["error"]["code"] != "model_not_found").then_some((status, body))
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_private_upstream_is_verified_with_its_own_ca_bundle_only() {
    let ca = TestCa::new().unwrap();
    let other = TestCa::new().unwrap();
    let mock = MockUpstream::start_tls(&ca.server_cert(7).unwrap())
        .await
        .unwrap();
    let mut c = TestCluster::start(0).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca_file = ca.write(files.path()).unwrap();
    let other_dir = files.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_file = other.write(&other_dir).unwrap();
    let not_pem = files.path().join("not.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let base_url = mock.base_url();
    assert!(base_url.starts_with("https://127.0.0.1:"), "{base_url}");

    let keys = [
        ("private", "sk-canary-CA-private-4f1e", Some(&ca_file)),
        ("public", "sk-canary-CA-public-9b2d", None),
        ("other", "sk-canary-CA-other-63a7", Some(&other_file)),
    ];
    for (name, key, file) in &keys {
        let path = file.map(|f| f.display().to_string());
        let extra: Vec<&str> = match &path {
            Some(p) => vec!["--upstream-ca-file", p.as_str()],
            None => Vec::new(),
        };
        add_provider(&c, name, &base_url, key, &extra);
    }

    // (d) Not PEM: refused by the CLI with the flag and the reason; nothing was added.
    let out = c
        .ctl(
            &[
                "provider",
                "add",
                "broken",
                "--format",
                "openai",
                "--base-url",
                &base_url,
                "--upstream-ca-file",
                &not_pem.display().to_string(),
            ],
            None,
        )
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--upstream-ca-file") && stderr.contains("holds no CERTIFICATE block"),
        "{stderr}"
    );

    // `provider list` names each bundle's certificate by subject and SHA-256, not by PEM.
    let list = c.ctl_ok(&["provider", "list"], None).unwrap();
    let ca_sha = sha256_of_pem(files.path(), &ca.pem());
    let other_sha = sha256_of_pem(files.path(), &other.pem());
    assert!(
        list.contains(&format!("CN=warden test CA (sha256 {ca_sha})")),
        "{list}"
    );
    assert!(list.contains(&other_sha), "{list}");
    assert!(
        !list.contains("BEGIN CERTIFICATE") && !list.contains("broken"),
        "{list}"
    );
    let json = c
        .ctl_ok(&["provider", "list", "--output", "json"], None)
        .unwrap();
    let providers: Value = serde_json::from_str(&json).unwrap();
    let private = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "private")
        .unwrap();
    assert_eq!(private["ca_certificates"][0]["sha256"], ca_sha.as_str());
    assert_eq!(
        private["ca_certificates"][0]["subject"],
        "CN=warden test CA"
    );

    c.add_node().await.unwrap();
    let token = c.issue_token("cabundle", "*").unwrap();

    // (a) With its own CA bundle: served over HTTPS, with the provider's key.
    let (status, body) = chat(&c, &token, "private-model").await;
    assert_eq!(status, 200, "{body}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer sk-canary-CA-private-4f1e")
    );

    // (b) The public roots, (c) another private CA: the handshake fails, nothing is sent.
    for model in ["public-model", "other-model"] {
        let (status, body) = chat(&c, &token, model).await;
        assert_eq!(status, 502, "{model}: {body}");
        assert_eq!(
            body["error"]["code"], "upstream_tls_failed",
            "{model}: {body}"
        );
        assert_eq!(body["error"]["type"], "api_error", "{model}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("certificate could not be verified"),
            "{body}"
        );
    }
    assert_eq!(mock.requests().len(), 1, "no request reached the mock");

    // Audited as refused requests with the reason; the CA bundle's fingerprint is in the
    // provider.add row.
    let refused = eventually(
        Duration::from_secs(15),
        "upstream_tls_failed audit rows",
        || async {
            let out = c
                .ctl_ok(
                    &["audit", "query", "--action", "request", "--format", "json"],
                    None,
                )
                .ok()?;
            let n = out
                .lines()
                .filter(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    warden_core::audit_detail::parse(v["detail"].as_str().unwrap())
                        .get("error")
                        .is_some_and(|e| e == "upstream_tls_failed")
                })
                .count();
            (n >= 2).then_some(n)
        },
    )
    .await
    .unwrap();
    assert_eq!(refused, 2);
    let adds = c
        .ctl_ok(
            &[
                "audit",
                "query",
                "--action",
                "provider.add",
                "--format",
                "json",
            ],
            None,
        )
        .unwrap();
    let with_ca = adds
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            warden_core::audit_detail::parse(v["detail"].as_str().unwrap())
                .get("ca_sha256")
                .cloned()
        })
        .collect::<Vec<_>>();
    assert!(with_ca.contains(&ca_sha), "{adds}");
    assert!(with_ca.contains(&other_sha), "{adds}");

    // The node's log says why; no upstream key is anywhere in logs, audit or state.
    let logs = c.logs();
    assert!(
        logs.contains("upstream TLS failed"),
        "the node logs the TLS failure"
    );
    assert!(logs.contains("UnknownIssuer"), "the node logs the reason");
    for (_, key, _) in &keys {
        let hits = c.find_everywhere(key);
        assert!(hits.is_empty(), "{key}: {hits:?}");
    }
}
