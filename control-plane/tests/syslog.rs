//! The audit syslog forwarder against a real rsyslogd: `imtcp` on a free loopback port
//! (plain, and TLS through the `gtls` netstream driver with client certificates), every
//! received message written raw (JSON-escaped, one per line) to a file that the tests read.
//!
//! rsyslogd is `WARDEN_TEST_RSYSLOGD`, else `rsyslogd` on the PATH (Debian: `apt-get
//! install rsyslog rsyslog-gnutls`; `scripts/test.sh` does it). A missing rsyslogd fails
//! the tests; they never skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_control_plane::audit::ChainedAudit;
use warden_control_plane::audit::export::{ExportFormat, ExportRecord, render};
use warden_control_plane::audit::syslog::{
    self, Facility, SD_ID, SyslogConfig, SyslogTls, load_cursor,
};
use warden_control_plane::domain::AuditRecord;
use warden_control_plane::store::StateStore;
use warden_control_plane::store::sqlite::SqliteStore;

// ---- rsyslogd ---------------------------------------------------------------------------

fn rsyslogd_path() -> String {
    std::env::var("WARDEN_TEST_RSYSLOGD").unwrap_or_else(|_| "rsyslogd".to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Files for rsyslogd's TLS listener (and the matching client side).
struct TlsFiles {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    /// A test CA, a server certificate for 127.0.0.1 and localhost, and a client
    /// certificate, all written as PEM into `dir`.
    fn generate(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden syslog test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            "rsyslog",
        );
        let (client_cert, client_key) = leaf(vec!["warden-cp".to_owned()], "warden-cp");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// One rsyslogd listening on a fixed port across restarts.
struct Rsyslog {
    dir: PathBuf,
    port: u16,
    conf: PathBuf,
    out: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    async fn start(dir: &Path, tls: Option<&TlsFiles>) -> Self {
        let port = free_port();
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let (global_tls, module_tls) = match tls {
            None => (String::new(), String::new()),
            Some(t) => (
                format!(
                    r#"defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{}"
  defaultNetstreamDriverCertFile="{}"
  defaultNetstreamDriverKeyFile="{}""#,
                    t.ca.display(),
                    t.server_cert.display(),
                    t.server_key.display()
                ),
                r#" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid""#
                    .to_owned(),
            ),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(
  workDirectory="{work}"
  maxMessageSize="64k"
  parser.escapeControlCharactersOnReceive="off"
  {global_tls}
)
main_queue(queue.workerThreads="1")
module(load="imtcp"{module_tls})
template(name="raw" type="string" string="%rawmsg:::json%\n")
ruleset(name="forwarded") {{
  action(type="omfile" file="{out}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="forwarded")
*.* action(type="omfile" file="{internal}")
"#,
                work = work.display(),
                out = out.display(),
                internal = dir.join("rsyslog-internal.log").display(),
            ),
        )
        .unwrap();
        let mut r = Self {
            dir: dir.to_owned(),
            port,
            conf,
            out,
            child: None,
        };
        r.restart().await;
        r
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "rsyslogd stderr:\n{}\nrsyslogd internal log:\n{}",
            read("rsyslogd.stderr"),
            read("rsyslog-internal.log")
        )
    }

    /// Starts rsyslogd (again) and waits until it accepts connections.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "rsyslogd is already running");
        let bin = rsyslogd_path();
        let stderr = std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run rsyslogd ({bin}): {e}. The syslog tests need a real rsyslogd: \
                     apt-get install rsyslog rsyslog-gnutls, or set WARDEN_TEST_RSYSLOGD"
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited during start-up ({status})\n{}",
                    self.diagnostics()
                );
            }
            if tokio::net::TcpStream::connect(self.address()).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rsyslogd did not listen on {} within 15 s\n{}",
                self.address(),
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops rsyslogd the way a service manager does (SIGTERM) and waits for it to exit.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("rsyslogd is not running");
        let pid = child.id().unwrap();
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("rsyslogd did not stop within 15 s after SIGTERM")
            .unwrap();
    }

    /// Every message received so far, as sent (unframed).
    fn received(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str::<String>(&format!("\"{line}\"")).unwrap_or_else(|e| {
                    panic!("rsyslog wrote a line that is not JSON-escaped ({e}): {line}")
                })
            })
            .collect()
    }
}

// ---- messages as received ---------------------------------------------------------------

/// An RFC 5424 message taken apart.
#[derive(Debug)]
struct Received {
    pri: u16,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

impl Received {
    fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no SD param {name} in {self:?}"))
    }

    fn seq(&self) -> u64 {
        self.param("seq").parse().unwrap()
    }
}

fn parse(raw: &str) -> Received {
    let rest = raw
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("no PRI: {raw}"));
    let (pri, rest) = rest.split_once('>').unwrap();
    let rest = rest
        .strip_prefix("1 ")
        .unwrap_or_else(|| panic!("not version 1: {raw}"));
    let mut header = rest.splitn(6, ' ');
    let mut next = || header.next().unwrap().to_owned();
    let (timestamp, hostname, app_name, _procid, msgid) = (next(), next(), next(), next(), next());
    let sd = next();
    let mut chars = sd.char_indices().peekable();
    assert_eq!(
        chars.next().map(|c| c.1),
        Some('['),
        "no structured data: {raw}"
    );
    let mut sd_id = String::new();
    while let Some(&(_, c)) = chars.peek() {
        if c == ' ' || c == ']' {
            break;
        }
        sd_id.push(c);
        chars.next();
    }
    let mut params = Vec::new();
    let end = loop {
        match chars.next() {
            Some((i, ']')) => break i,
            Some((_, ' ')) => {
                let mut name = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    name.push(c);
                }
                assert_eq!(
                    chars.next().map(|c| c.1),
                    Some('"'),
                    "unquoted value: {raw}"
                );
                let mut value = String::new();
                loop {
                    match chars.next().map(|c| c.1) {
                        Some('\\') => value.push(chars.next().unwrap().1),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("unterminated value: {raw}"),
                    }
                }
                params.push((name, value));
            }
            other => panic!("bad structured data at {other:?}: {raw}"),
        }
    };
    let msg = sd[end + 1..]
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no MSG: {raw}"))
        .to_owned();
    Received {
        pri: pri.parse().unwrap(),
        timestamp,
        hostname,
        app_name,
        msgid,
        sd_id,
        params,
        msg,
    }
}

/// Checks that `got` carries `row` intact.
fn assert_carries(got: &Received, row: &ChainedAudit, format: ExportFormat) {
    let r = &row.record;
    assert_eq!(got.sd_id, SD_ID);
    assert_eq!(got.param("seq"), row.seq.to_string());
    assert_eq!(got.param("id"), r.id);
    assert_eq!(got.param("action"), r.action);
    assert_eq!(got.param("actor"), r.actor);
    assert_eq!(got.param("subject"), r.subject);
    assert_eq!(got.param("result"), r.result);
    assert_eq!(got.param("hash"), row.hash);
    assert_eq!(got.msg, render(&ExportRecord::from(row), format));
    assert_eq!(got.app_name, "warden-cp");
    assert_eq!(got.hostname, "test-host");
    assert_eq!(got.msgid, r.action.replace(' ', ""));
    assert!(got.timestamp.ends_with('Z') && got.timestamp.len() == 24);
    let severity = if r.result == "ok" { 6 } else { 4 };
    assert_eq!(
        got.pri,
        10 * 8 + severity,
        "authpriv and the result's severity"
    );
}

// ---- the control plane's side -----------------------------------------------------------

async fn open_store(dir: &Path) -> Arc<dyn StateStore> {
    Arc::new(SqliteStore::open(&dir.join("state.db")).await.unwrap())
}

/// Record `i`; every fifth holds what structured data and MSG must escape.
fn record(i: u64) -> AuditRecord {
    let nasty = i.is_multiple_of(5);
    AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        timestamp_ms: 1_717_243_200_000 + i as i64,
        action: if nasty {
            "provider.key.add"
        } else {
            "token.issue"
        }
        .to_owned(),
        actor: if nasty {
            format!("admin \"root\" \\ Zoë]{i}")
        } else {
            format!("admin-{i}")
        },
        subject: if nasty {
            format!("a=b|c]d [x] 日本\nline2 {i}")
        } else {
            format!("jti-{i}")
        },
        result: if nasty { "denied" } else { "ok" }.to_owned(),
        detail: if nasty {
            "line1\nline2\r\\path=x \"q\" | é".to_owned()
        } else {
            String::new()
        },
    }
}

async fn append(store: &dyn StateStore, wake: &Notify, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        store.append_audit(&record(i)).await.unwrap();
        wake.notify_one();
    }
}

fn config(address: String, format: ExportFormat, tls: Option<&TlsFiles>) -> SyslogConfig {
    SyslogConfig {
        address,
        tls: tls.map(|t| SyslogTls {
            ca_file: t.ca.clone(),
            client_cert: Some(t.client_cert.clone()),
            client_key: Some(t.client_key.clone()),
            server_name: None,
        }),
        facility: Facility::Authpriv,
        format,
        app_name: "warden-cp".to_owned(),
        hostname: Some("test-host".to_owned()),
    }
}

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    async fn start(config: SyslogConfig, store: Arc<dyn StateStore>, wake: Arc<Notify>) -> Self {
        let shutdown = CancellationToken::new();
        let handle = syslog::spawn(config, store, Some(wake), shutdown.clone())
            .await
            .unwrap();
        Self { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("forwarder did not stop within 10 s")
            .unwrap();
    }
}

/// Waits until rsyslogd wrote at least `n` messages.
async fn wait_received(rsyslog: &Rsyslog, n: usize, within: Duration) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = rsyslog.received();
        if got.len() >= n {
            return got.iter().map(|m| parse(m)).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rsyslogd received {} of {n} messages within {within:?}\n{}",
            got.len(),
            rsyslog.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every seq in `1..=n` was received at least once.
async fn wait_all_seqs(rsyslog: &Rsyslog, n: u64, within: Duration) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got: Vec<Received> = rsyslog.received().iter().map(|m| parse(m)).collect();
        let seen: HashSet<u64> = got.iter().map(Received::seq).collect();
        if (1..=n).all(|s| seen.contains(&s)) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {within:?} rsyslogd is missing seqs {:?}\n{}",
            (1..=n)
                .filter(|s| !seen.contains(s))
                .take(20)
                .collect::<Vec<_>>(),
            rsyslog.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rows(store: &dyn StateStore) -> Vec<ChainedAudit> {
    store.list_audit_range(1, 10_000).await.unwrap()
}

fn assert_exactly_once_in_order(got: &[Received], rows: &[ChainedAudit], format: ExportFormat) {
    let seqs: Vec<u64> = got.iter().map(Received::seq).collect();
    let want: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, want, "every record exactly once, in order");
    for (g, row) in got.iter().zip(rows) {
        assert_carries(g, row, format);
    }
}

const WITHIN: Duration = Duration::from_secs(30);

// ---- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_every_record_once_in_order_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), None).await;
    let store = open_store(dir.path()).await;
    let wake = Arc::new(Notify::new());
    let format = ExportFormat::Json;

    // A backlog from before the forwarder started, then records as they are appended.
    append(&*store, &wake, 1..=150).await;
    let forwarder = Running::start(
        config(rsyslog.address(), format, None),
        store.clone(),
        wake.clone(),
    )
    .await;
    wait_received(&rsyslog, 150, WITHIN).await;
    append(&*store, &wake, 151..=200).await;
    let got = wait_received(&rsyslog, 200, WITHIN).await;
    assert_exactly_once_in_order(&got, &rows(&*store).await, format);

    // A clean stop stores the cursor; the next start resumes after it.
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), 200);
    let forwarder = Running::start(
        config(rsyslog.address(), format, None),
        store.clone(),
        wake.clone(),
    )
    .await;
    append(&*store, &wake, 201..=205).await;
    wait_received(&rsyslog, 205, WITHIN).await;
    // Nothing is sent twice, even a little later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Vec<Received> = rsyslog.received().iter().map(|m| parse(m)).collect();
    assert_exactly_once_in_order(&got, &rows(&*store).await, format);
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), 205);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::start(dir.path(), None).await;
    let store = open_store(dir.path()).await;
    let wake = Arc::new(Notify::new());
    let format = ExportFormat::Cef;
    let forwarder = Running::start(
        config(rsyslog.address(), format, None),
        store.clone(),
        wake.clone(),
    )
    .await;

    // Records keep coming while rsyslogd stops and starts again.
    const N: u64 = 300;
    let writer = {
        let (store, wake) = (store.clone(), wake.clone());
        tokio::spawn(async move {
            for i in 1..=N {
                append(&*store, &wake, i..=i).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_received(&rsyslog, 60, WITHIN).await;
    rsyslog.stop().await;
    let received_before = rsyslog.received().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rsyslog.restart().await;
    tokio::time::timeout(WITHIN, writer).await.unwrap().unwrap();

    let got = wait_all_seqs(&rsyslog, N, WITHIN).await;
    let rows = rows(&*store).await;
    assert_eq!(rows.len() as u64, N);
    // At least once: every record arrived intact; the first arrival of each is in order.
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for g in &got {
        let seq = g.seq();
        assert_carries(g, &rows[(seq - 1) as usize], format);
        if seen.insert(seq) {
            first_seen.push(seq);
        }
    }
    assert_eq!(first_seen, (1..=N).collect::<Vec<_>>());
    eprintln!(
        "received {} messages for {N} records ({received_before} before the stop; {} resent)",
        got.len(),
        got.len() as u64 - N
    );
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_mutual_tls_to_rsyslog_gtls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let rsyslog = Rsyslog::start(dir.path(), Some(&tls)).await;
    let store = open_store(dir.path()).await;
    let wake = Arc::new(Notify::new());
    let format = ExportFormat::Ocsf;

    append(&*store, &wake, 1..=40).await;
    let forwarder = Running::start(
        config(rsyslog.address(), format, Some(&tls)),
        store.clone(),
        wake.clone(),
    )
    .await;
    append(&*store, &wake, 41..=60).await;
    let got = wait_received(&rsyslog, 60, WITHIN).await;
    assert_exactly_once_in_order(&got, &rows(&*store).await, format);
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_an_unknown_ca_gets_nothing() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let served = TlsFiles::generate(dir.path());
    let rsyslog = Rsyslog::start(dir.path(), Some(&served)).await;
    // The forwarder trusts another CA.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let trusted = TlsFiles::generate(&other_dir);
    let store = open_store(dir.path()).await;
    let wake = Arc::new(Notify::new());
    append(&*store, &wake, 1..=3).await;
    let forwarder = Running::start(
        config(rsyslog.address(), ExportFormat::Json, Some(&trusted)),
        store.clone(),
        wake.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        rsyslog.received().is_empty(),
        "nothing goes to an unverified receiver"
    );
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_requires_a_client_certificate_gets_nothing_without_one() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let rsyslog = Rsyslog::start(dir.path(), Some(&tls)).await;
    let store = open_store(dir.path()).await;
    let wake = Arc::new(Notify::new());
    append(&*store, &wake, 1..=3).await;
    let mut c = config(rsyslog.address(), ExportFormat::Json, Some(&tls));
    if let Some(t) = c.tls.as_mut() {
        t.client_cert = None;
        t.client_key = None;
    }
    let forwarder = Running::start(c, store.clone(), wake.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        rsyslog.received().is_empty(),
        "rsyslogd (x509/certvalid) took messages from a client without a certificate"
    );
    forwarder.stop().await;
    assert_eq!(load_cursor(&*store).await.unwrap(), 0);
}

#[tokio::test]
async fn bad_tls_files_fail_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut c = config("127.0.0.1:1".to_owned(), ExportFormat::Json, None);
    c.tls = Some(SyslogTls {
        ca_file: dir.path().join("missing.pem"),
        client_cert: None,
        client_key: None,
        server_name: None,
    });
    let err = syslog::spawn(c.clone(), store.clone(), None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("audit.syslog.tls.ca_file"),
        "{err}"
    );

    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    c.tls = Some(SyslogTls {
        ca_file: dir.path().join("empty.pem"),
        client_cert: None,
        client_key: None,
        server_name: None,
    });
    let err = syslog::spawn(c, store, None, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("audit.syslog.tls.ca_file"),
        "{err}"
    );
}
