//! JWT attack cases against a node: every one must get 401 with the same OpenAI-shaped
//! body, and none may reach the provider. Forged tokens that need the real signing key
//! (expired, not yet valid) are signed with it, read from the control plane's state store
//! (`warden_secrets`) with the master key the test owns.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use warden_core::jwt::{Claims, KeyMaterial, SigningAlgorithm};
use warden_tests::cluster::{MODEL, Options, TestCluster};

fn header_and_claims(token: &str) -> (Value, Claims) {
    let parts: Vec<&str> = token.split('.').collect();
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    (header, claims)
}

async fn real_signing_key(c: &TestCluster, kid: &str) -> KeyMaterial {
    let private = c.own_secret(&format!("warden/jwt/{kid}")).await.unwrap();
    let raw = hex::decode(private.expose_secret()).unwrap();
    KeyMaterial::from_stored(kid.to_owned(), SigningAlgorithm::EdDSA, raw).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn jwt_attacks_are_rejected_with_401() {
    // Failed logins after an address's first are audited per reason when their window
    // closes: a short one keeps the test short.
    let c = TestCluster::start_with(
        1,
        Options {
            node_args: vec!["--failed-login-window".into(), "1s".into()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let good = c.issue_token("victim", "*").unwrap();
    let (header, claims) = header_and_claims(&good);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let claims_json = serde_json::to_value(&claims).unwrap();
    let key = real_signing_key(&c, &kid).await;
    let now = warden_core::unix_now();

    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg: none, with and without a signature part.
    let none_header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
    cases.push((
        "alg none",
        format!("{}.{}.", b64(&none_header), b64(&claims_json)),
    ));
    cases.push((
        "alg none, no dot",
        format!("{}.{}", b64(&none_header), b64(&claims_json)),
    ));
    // Algorithm confusion: HS256 keyed with the Ed25519 public key.
    let confused = KeyMaterial::from_stored(
        kid.clone(),
        SigningAlgorithm::HS256,
        key.verification.expose_secret().clone(),
    )
    .unwrap();
    cases.push((
        "alg confusion",
        confused.sign(&claims).unwrap().expose_secret().to_owned(),
    ));
    // Unknown kid, signed by a key Warden never issued.
    let stranger = KeyMaterial::generate("k-unknown".into(), SigningAlgorithm::EdDSA).unwrap();
    cases.push((
        "unknown kid",
        stranger.sign(&claims).unwrap().expose_secret().to_owned(),
    ));
    // Right kid, wrong key.
    let imposter = KeyMaterial::generate(kid.clone(), SigningAlgorithm::EdDSA).unwrap();
    cases.push((
        "bad signature",
        imposter.sign(&claims).unwrap().expose_secret().to_owned(),
    ));
    // Payload edited after signing (escalate scopes).
    let parts: Vec<&str> = good.split('.').collect();
    let mut escalated = claims_json.clone();
    escalated["scope"] = "read write admin".into();
    cases.push((
        "edited payload",
        format!("{}.{}.{}", parts[0], b64(&escalated), parts[2]),
    ));
    // Expired beyond the leeway, and not yet valid — both properly signed.
    let mut expired = claims.clone();
    expired.exp = now - 3600;
    expired.iat = now - 7200;
    cases.push((
        "expired",
        key.sign(&expired).unwrap().expose_secret().to_owned(),
    ));
    let mut early = claims.clone();
    early.nbf = Some(now + 3600);
    cases.push((
        "not yet valid",
        key.sign(&early).unwrap().expose_secret().to_owned(),
    ));
    // Wrong audience, properly signed.
    let mut wrong_aud = claims.clone();
    wrong_aud.aud = "another-service".into();
    cases.push((
        "wrong audience",
        key.sign(&wrong_aud).unwrap().expose_secret().to_owned(),
    ));
    // Garbage.
    cases.push(("garbage", "eyJ.garbage.here".into()));
    cases.push(("empty bearer", String::new()));

    // Sanity: the real key signs tokens the node accepts, so the rejections below are
    // about the attack, not about a broken forging setup.
    let mut fresh = claims.clone();
    fresh.jti = "forged-but-valid".into();
    let ok = key.sign(&fresh).unwrap();
    let r = c
        .chat(
            0,
            ok.expose_secret(),
            &TestCluster::chat_body(MODEL, "x", false),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "control case failed");

    let mut bodies = Vec::new();
    for (name, token) in &cases {
        let r = c
            .chat(0, token, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name} was not rejected");
        bodies.push(r.text().await.unwrap());
    }
    // Revoked: valid signature, revoked jti.
    let jti = claims.jti.clone();
    c.ctl_ok(&["token", "revoke", &jti], None).unwrap();
    warden_tests::cluster::eventually(std::time::Duration::from_secs(2), "revocation", || async {
        let r = c
            .chat(0, &good, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .ok()?;
        (r.status() == 401).then_some(())
    })
    .await
    .unwrap();
    // Every rejection looks the same to the caller: no hint which check failed.
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(first["error"]["code"], "invalid_api_key");
    for b in &bodies {
        assert_eq!(b, &bodies[0], "rejections differ");
    }
    assert_eq!(
        c.mock.requests().len(),
        1,
        "only the control case may reach the provider"
    );
    // The node logged a reason for each, without the tokens themselves.
    let logs = c.logs();
    for reason in [
        "jwt_malformed",
        "jwt_alg_mismatch",
        "jwt_unknown_kid",
        "jwt_bad_signature",
        "jwt_expired",
        "jwt_not_yet_valid",
        "jwt_revoked",
    ] {
        assert!(logs.contains(reason), "no log line with {reason}");
    }
    assert!(!logs.contains(&good), "a token reached the logs");
    // Every reason reached the control plane's audit log — the address's first failure
    // with a fingerprint of what was presented, the others counted per reason — never the
    // token.
    let audit = warden_tests::cluster::eventually(
        std::time::Duration::from_secs(10),
        "auth failures in the audit log",
        || async {
            let a = c
                .ctl_ok(
                    &[
                        "audit",
                        "list",
                        "--action",
                        "auth.client",
                        "--limit",
                        "100",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .ok()?;
            let rows: Value = serde_json::from_str(&a).ok()?;
            let all_reasons = [
                "jwt_alg_mismatch",
                "jwt_unknown_kid",
                "jwt_expired",
                "jwt_revoked",
            ]
            .iter()
            .all(|r| a.contains(r));
            let counted = rows
                .as_array()?
                .iter()
                .filter(|r| r["detail"].as_str().is_some_and(|d| d.contains("count=")))
                .count();
            (counted >= 1 && all_reasons).then_some(a)
        },
    )
    .await
    .unwrap();
    for reason in [
        "jwt_alg_mismatch",
        "jwt_unknown_kid",
        "jwt_expired",
        "jwt_revoked",
    ] {
        assert!(audit.contains(reason), "no audit row with {reason}");
    }
    for (_, token) in &cases {
        if token.len() > 20 {
            assert!(
                !audit.contains(token.as_str()),
                "a presented token is in the audit log"
            );
        }
    }
    assert!(!audit.contains(&good));
}

#[tokio::test]
async fn admin_and_node_credentials_are_not_client_credentials() {
    let c = TestCluster::start(1).await.unwrap();
    for credential in [c.admin_token.clone(), c.node_token.clone()] {
        let r = c
            .chat(0, &credential, &TestCluster::chat_body(MODEL, "x", false))
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert!(c.mock.requests().is_empty());
}
