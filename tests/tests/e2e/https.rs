//! HTTPS on the node's API listener, against real `warden-dp` processes holding a
//! certificate from a throwaway CA: the official `openai` Python SDK over HTTPS, TLS 1.3 and
//! 1.2 served and TLS 1.1 refused by the node, HTTP/2 agreed by ALPN, HSTS on HTTPS
//! answers, certificate files replaced under a running node (new connections get the new
//! certificate, an open stream goes on; a bad new pair is refused and the old certificate
//! kept), and a client that never finishes its handshake closed at the header-read timeout
//! without holding up anyone else.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use warden_tests::cluster::{MODEL, Options, TestCluster, eventually};
use warden_tests::mock::Behavior;
use warden_tests::pki::{ServerCert, TestCa, handshake};

/// A cluster with one node serving HTTPS with `cert`, started with `args` besides.
pub(crate) struct HttpsNode {
    pub(crate) cluster: TestCluster,
    pub(crate) ca: TestCa,
    ca_file: PathBuf,
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    _certs: tempfile::TempDir,
}

impl HttpsNode {
    pub(crate) async fn start(args: &[&str]) -> Self {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new().unwrap();
        let ca_file = ca.write(certs.path()).unwrap();
        let (cert_file, key_file) = (certs.path().join("node.pem"), certs.path().join("node.key"));
        ca.server_cert(1)
            .unwrap()
            .install(&cert_file, &key_file)
            .unwrap();
        let mut node_args = vec![
            "--http-tls-cert-file".to_owned(),
            cert_file.display().to_string(),
            "--http-tls-key-file".to_owned(),
            key_file.display().to_string(),
        ];
        node_args.extend(args.iter().map(|a| (*a).to_owned()));
        let cluster = TestCluster::start_with(
            1,
            Options {
                node_args,
                ..Options::default()
            },
        )
        .await
        .unwrap();
        Self {
            cluster,
            ca,
            ca_file,
            cert_file,
            key_file,
            _certs: certs,
        }
    }

    fn port(&self) -> u16 {
        self.cluster.nodes[0].port
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port())
    }

    /// The certificate a new connection is served now.
    pub(crate) async fn served(&self) -> rustls::pki_types::CertificateDer<'static> {
        let config = self
            .ca
            .client_config(rustls::DEFAULT_VERSIONS, &[b"http/1.1".as_slice()])
            .unwrap();
        handshake(self.port(), config).await.unwrap().certificate
    }

    async fn wait_served(&self, cert: &ServerCert, what: &str) {
        eventually(Duration::from_secs(15), what, || async {
            (self.served().await == cert.der).then_some(())
        })
        .await
        .unwrap();
    }

    fn refusals(&self) -> usize {
        self.cluster
            .logs()
            .matches("new certificate or key refused")
            .count()
    }
}

#[tokio::test]
async fn the_openai_sdk_talks_https_and_the_node_speaks_tls_1_3_and_1_2_only() {
    let n = HttpsNode::start(&[]).await;
    let token = n.cluster.issue_token("tls-sdk", MODEL).unwrap();
    let mut env = n.cluster.env_for(0, &token);
    env.insert("WARDEN_URL".to_owned(), n.url("/v1"));
    env.insert("WARDEN_CA_FILE".to_owned(), n.ca_file.display().to_string());
    let r = warden_tests::cluster::run_python_script("sdk_openai_tls.py", env)
        .await
        .unwrap();
    assert_eq!(r["plain_content"], "mock: hello over tls", "{r}");
    assert_eq!(r["stream_content"], "mock: stream over tls", "{r}");
    assert_eq!(r["default"]["version"], "TLSv1.3", "{r}");
    assert_eq!(r["default"]["alpn"], "h2", "{r}");
    assert_eq!(r["tls12"]["version"], "TLSv1.2", "{r}");
    assert_eq!(r["tls12"]["alpn"], "http/1.1", "{r}");
    // The ClientHello offered TLS 1.1 at most, and the node answered with a fatal alert
    // (OpenSSL names alerts it received "… alert …"; its own refusals read otherwise).
    // rustls sends `handshake_failure`: a pre-1.2 hello has no signature_algorithms.
    let refused = r["tls11"]["error"].as_str().unwrap_or_default();
    assert!(
        refused.contains("alert handshake failure") || refused.contains("alert protocol version"),
        "{r}"
    );
    // Plain HTTP is not served on the HTTPS port.
    let plain = n
        .cluster
        .http
        .get(n.cluster.nodes[0].url("/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn http2_is_agreed_by_alpn_and_https_answers_carry_hsts() {
    let n = HttpsNode::start(&["--http-hsts-max-age", "1d"]).await;
    let token = n.cluster.issue_token("tls-h2", MODEL).unwrap();
    let h2 = n.ca.reqwest_client().unwrap().build().unwrap();
    let r = h2
        .post(n.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "over h2", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=86400");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"], "mock: over h2",
        "{body}"
    );
    // Errors carry it too.
    let r = h2
        .get(n.url("/v1/models"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=86400");
    let h1 = n.ca.reqwest_client().unwrap().http1_only().build().unwrap();
    let r = h1.get(n.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=86400");
    let seen = handshake(
        n.port(),
        n.ca.client_config(
            rustls::DEFAULT_VERSIONS,
            &[b"h2".as_slice(), b"http/1.1".as_slice()],
        )
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    // The ops listener stays plain HTTP, without the header.
    let r = n
        .cluster
        .http
        .get(n.cluster.nodes[0].ops_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn replaced_certificate_files_are_served_to_new_connections_while_an_open_stream_goes_on() {
    let n = HttpsNode::start(&["--http-tls-reload-interval", "300ms"]).await;
    let first = n.served().await;
    let token = n.cluster.issue_token("tls-reload", MODEL).unwrap();
    n.cluster.mock.set_behavior(Behavior::GatedStream);
    let client = n.ca.reqwest_client().unwrap().build().unwrap();
    let r = client
        .post(n.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&TestCluster::chat_body(MODEL, "across the swap", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut text = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).to_string();

    // New files: new connections get the new certificate (serial 2), without a restart.
    let second = n.ca.server_cert(2).unwrap();
    assert_ne!(second.der, first);
    second.install(&n.cert_file, &n.key_file).unwrap();
    n.wait_served(&second, "the replaced certificate to be served")
        .await;

    // The stream opened before the swap runs to its end on its connection.
    n.cluster.mock.release_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let answer: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(answer, "mock: across the swap");

    // A garbage certificate is refused (logged) and the previous one still served.
    let before = n.refusals();
    std::fs::write(&n.cert_file, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    eventually(
        Duration::from_secs(10),
        "the garbage to be refused",
        || async { (n.refusals() > before).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(n.served().await, second.der);
    // So is a good certificate whose key is not in the key file.
    let third = n.ca.server_cert(3).unwrap();
    let before = n.refusals();
    std::fs::write(&n.cert_file, &third.cert_pem).unwrap();
    eventually(
        Duration::from_secs(10),
        "the mismatched pair to be refused",
        || async { (n.refusals() > before).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(n.served().await, second.der);
    let r = client.get(n.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Once the key arrives, the pair is served.
    third.install(&n.cert_file, &n.key_file).unwrap();
    n.wait_served(&third, "the third certificate to be served")
        .await;
    let logs = n.cluster.logs();
    assert!(
        !logs.contains(third.key_pem.lines().nth(1).unwrap()),
        "a key in the logs"
    );
    let m = n
        .cluster
        .http
        .get(n.cluster.nodes[0].ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_http_tls_reloads_total{result=\"refused\"}")),
        "{m}"
    );
}

/// Reads until the peer closes `stream`; how long after `started` that was, or `None` past
/// `give_up`. With `trickle`, one byte of a TLS record is written every second meanwhile.
async fn wait_closed(
    stream: TcpStream,
    started: Instant,
    trickle: bool,
    give_up: Duration,
) -> Option<Duration> {
    let (mut reader, mut writer) = stream.into_split();
    let read = async move {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let write = async move {
        // A handshake record of 512 bytes announced, then sent a byte a second.
        let mut bytes = [0x16u8, 0x03, 0x01, 0x02, 0x00]
            .into_iter()
            .chain(std::iter::repeat(0));
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if trickle {
                let _ = writer.write_all(&[bytes.next().unwrap_or(0)]).await;
            }
        }
    };
    tokio::time::timeout(give_up, async {
        tokio::select! {
            closed = read => closed,
            () = write => unreachable!(),
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_at_the_header_read_timeout() {
    let n = HttpsNode::start(&["--http-header-read-timeout", "2s"]).await;
    let connect = || TcpStream::connect(("127.0.0.1", n.port()));
    let silent = connect().await.unwrap();
    let trickling = connect().await.unwrap();
    let opened = Instant::now();
    // Meanwhile other clients are served at once: no handshake waits in the accept loop.
    let client =
        n.ca.reqwest_client()
            .unwrap()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
    let r = client.get(n.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        opened.elapsed() < Duration::from_secs(1),
        "{:?}",
        opened.elapsed()
    );
    let (silent, trickling) = tokio::join!(
        wait_closed(silent, opened, false, Duration::from_secs(10)),
        wait_closed(trickling, opened, true, Duration::from_secs(10)),
    );
    for (what, after) in [("silent", silent), ("trickling", trickling)] {
        let after = after.unwrap_or_else(|| panic!("the {what} client was still open after 10 s"));
        assert!(
            after >= Duration::from_millis(1500) && after <= Duration::from_secs(4),
            "the {what} client was closed after {after:?}, not at the 2 s header-read timeout"
        );
    }
    let m = n
        .cluster
        .http
        .get(n.cluster.nodes[0].ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines().any(|l| l.starts_with(
            "warden_http_connections_timed_out_total{listener=\"api\",timeout=\"header_read\"} 2"
        )),
        "{m}"
    );
}
