//! `deploy/compose/compose.yaml`, started as processes (no container can run here): the
//! services, commands, environments, secrets, configs and volumes are read from the Compose
//! file, and `warden-cp.toml` / `warden-dp.env` are the files it mounts. OpenBao runs the
//! `openbao` service's own command (`bao server -dev -dev-tls`, from `WARDEN_TEST_BAO_BIN`:
//! the replicas check its TLS with the CA it writes to the shared `openbao-tls` volume) and
//! passes the service's healthcheck; the init job (`warden-bootstrap`) issues the admin
//! credential; two `warden-cp` replicas share a fresh PostgreSQL schema; a node credential is issued the README's way and
//! written where the `warden-node-token` secret is read, two `warden-dp` nodes get the
//! Compose file's `--cp-addr` lists of both replicas, then the README's first-token steps:
//! a provider (the mock upstream, its key stored in OpenBao), a model, a token, and a chat
//! through each node.
//!
//! What is rewritten, and why: the processes share one network namespace, so every port a
//! container binds (`WARDEN_GRPC_ADDR` from the toml's `grpc_addr`, `WARDEN_OPS_ADDR`,
//! `WARDEN_HTTP_ADDR`) becomes a free port on the SAME host (`0.0.0.0`: the listeners'
//! off-loopback rules, e.g. the toml's `allow_plaintext`, still apply), and every service
//! name dialled (`http://warden-cp-N:50051` in `--cp-addr`) becomes 127.0.0.1 with that
//! replica's port; the backends' URLs (`WARDEN_REDIS_URL`, the env file's
//! `WARDEN_DATABASE_URL`, and in `warden-cp.toml`, which has no environment override for
//! them, the lines `address = "https://openbao:8200"` and `ca_file = "…"`) point at the test
//! backends (OpenBao's `-dev-listen-address` and `HOME` too); OpenBao's root token is a fresh random
//! one in `BAO_DEV_ROOT_TOKEN_ID` and the replicas' `BAO_TOKEN`, as `secrets/*.env` hold it;
//! `WARDEN_DATABASE_SCHEMA` and `WARDEN_REDIS_PREFIX` are fresh, so parallel tests share
//! nothing; container paths under a mounted secret, config or volume map to files in the
//! test's directory (`WARDEN_DATA_DIR` for the toml's `data_dir`, the master key file, the
//! spool); `WARDEN_EGRESS_ALLOW` names the mock upstream's host instead of the providers'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_norway::Value;
use warden_tests::cluster::{TestCluster, bin, eventually, free_port};
use warden_tests::mock::MockUpstream;

const REPLICAS: [&str; 2] = ["warden-cp-1", "warden-cp-2"];
const NODES: [&str; 2] = ["warden-dp-1", "warden-dp-2"];
/// The gRPC port every replica listens on inside its container (`warden-cp.toml`).
const CP_CONTAINER_PORT: u16 = 50051;

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose")
}

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run scripts/test.sh (it starts the test backends)"),
    }
}

/// compose.yaml with its `<<:` merge keys applied (as Compose does).
fn compose() -> Value {
    let text = std::fs::read_to_string(compose_dir().join("compose.yaml")).unwrap();
    let mut doc: Value = serde_norway::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    doc
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A service's `environment:` (mapping form).
fn environment(svc: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Some(map) = svc["environment"].as_mapping() {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            env.insert(k.as_str().unwrap().to_owned(), v);
        }
    }
    env
}

/// KEY=VALUE lines of an env file.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", path.display()));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Where a service's container paths live in this test: its configs (to `configs`' files),
/// its secrets (`/run/secrets/NAME`) and its named volumes (a directory each).
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    fn of(doc: &Value, svc: &Value, dir: &Path, configs: &BTreeMap<String, PathBuf>) -> Self {
        let mut m = Vec::new();
        for c in svc["configs"].as_sequence().into_iter().flatten() {
            let source = c["source"].as_str().unwrap();
            let target = c["target"].as_str().unwrap().to_owned();
            m.push((target, configs[source].clone()));
        }
        for s in strings(&svc["secrets"]) {
            assert!(
                doc["secrets"].get(s.as_str()).is_some(),
                "secret {s} not declared"
            );
            m.push((format!("/run/secrets/{s}"), dir.join("secrets").join(&s)));
        }
        for v in strings(&svc["volumes"]) {
            let mut parts = v.split(':');
            let (name, target) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                doc["volumes"].get(name).is_some(),
                "volume {name} not declared"
            );
            let host = dir.join("volumes").join(name);
            std::fs::create_dir_all(&host).unwrap();
            m.push((target.to_owned(), host));
        }
        Self(m)
    }

    /// `path` (a container path) on this machine; `None` when no mount holds it.
    fn map(&self, path: &str) -> Option<String> {
        self.0.iter().find_map(|(target, host)| {
            let rest = path.strip_prefix(target.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", host.display()))
        })
    }

    /// Arguments with container paths mapped, also in `-flag=PATH`.
    fn map_all(&self, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|a| {
                if let Some(m) = self.map(a) {
                    return m;
                }
                if let Some((flag, value)) = a.split_once('=')
                    && let Some(m) = self.map(value)
                {
                    return format!("{flag}={m}");
                }
                a.clone()
            })
            .collect()
    }
}

/// `host:port` with another port (the host kept).
fn with_port(addr: &str, port: u16) -> String {
    let (host, _) = addr.rsplit_once(':').expect("host:port");
    format!("{host}:{port}")
}

/// Processes killed when the test ends, however it ends.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(|(name, c)| {
            c.try_wait()
                .ok()
                .flatten()
                .map(|s| format!("{name} exited ({s})"))
        })
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir.join("logs")).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("--- {}\n", e.path().display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn spawn(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Child {
    Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("logs").join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join("logs").join(format!("{name}.log"))).unwrap())
        .spawn()
        .unwrap()
}

/// `wardenctl` against `cp_addr` with the admin credential, as the README runs it.
fn ctl(cp_addr: &str, admin: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new(bin("wardenctl").unwrap())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARDEN_CP_ADDR", cp_addr)
        .env("WARDEN_ADMIN_TOKEN", admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "wardenctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn wait_ok(procs: &mut Procs, http: &reqwest::Client, url: &str, what: &str, dir: &Path) {
    let r = eventually(Duration::from_secs(30), what, || {
        let exited = procs.exited();
        let (http, url) = (http.clone(), url.to_owned());
        async move {
            if let Some(e) = exited {
                return Some(Err(e));
            }
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(Ok(()))
        }
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}\n{}", logs(dir)),
        Err(e) => panic!("{e}\n{}", logs(dir)),
    }
}

#[tokio::test]
async fn the_compose_topology_runs_as_processes_and_serves_a_first_token_through_each_node() {
    let started = Instant::now();
    let database_url = require_env("WARDEN_TEST_DATABASE_URL");
    let redis_url = require_env("WARDEN_TEST_REDIS_URL");
    let bao = PathBuf::from(require_env("WARDEN_TEST_BAO_BIN"));
    let doc = compose();
    for name in ["postgres", "redis", "openbao", "warden-bootstrap"]
        .iter()
        .chain(&REPLICAS)
        .chain(&NODES)
    {
        service(&doc, name);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("e2e_compose_{}", &id[..12]);
    let redis_prefix = format!("wt-compose-{}", &id[..12]);

    let configs: BTreeMap<String, PathBuf> = doc["configs"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| {
            (
                k.as_str().unwrap().to_owned(),
                dir.join(k.as_str().unwrap()),
            )
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut procs = Procs::default();

    // OpenBao, as the `openbao` service runs it, until its healthcheck passes.
    let bao_svc = service(&doc, "openbao");
    let bao_mounts = Mounts::of(&doc, bao_svc, dir, &configs);
    let bao_port = free_port().unwrap();
    let bao_token = format!("root-{id}");
    let mut bao_env = environment(bao_svc);
    bao_env.insert("BAO_DEV_ROOT_TOKEN_ID".into(), bao_token.clone());
    for value in bao_env.values_mut() {
        if let Some(m) = bao_mounts.map(value) {
            *value = m;
        }
    }
    // HOME (a tmpfs in the container) is this test's directory, not the machine's /tmp.
    bao_env.insert("HOME".into(), dir.display().to_string());
    let addr = bao_env.get_mut("BAO_ADDR").unwrap();
    assert_eq!(addr.as_str(), "https://127.0.0.1:8200");
    *addr = format!("https://127.0.0.1:{bao_port}");
    let mut args = bao_mounts.map_all(&strings(&bao_svc["command"]));
    let listen = args
        .iter_mut()
        .find(|a| a.starts_with("-dev-listen-address="))
        .unwrap();
    *listen = format!("-dev-listen-address=127.0.0.1:{bao_port}");
    procs.0.push((
        "openbao".into(),
        spawn(dir, "openbao", &bao, &args, &bao_env),
    ));
    let check = strings(&bao_svc["healthcheck"]["test"]);
    assert_eq!(check[..2], ["CMD".to_owned(), "bao".to_owned()]);
    eventually(Duration::from_secs(20), "openbao's healthcheck", || {
        // PATH as the image has it (the CLI looks for its token helper).
        let ok = Command::new(&bao)
            .args(&check[2..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&bao_env)
            .output()
            .is_ok_and(|o| o.status.success());
        async move { ok.then_some(()) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));

    // configs: warden-cp.toml, pointing at this OpenBao and at its CA in the shared volume.
    let cp_mounts = Mounts::of(&doc, service(&doc, REPLICAS[0]), dir, &configs);
    for (name, spec) in doc["configs"].as_mapping().unwrap() {
        let file = compose_dir().join(spec["file"].as_str().unwrap());
        let mut text = std::fs::read_to_string(&file).unwrap();
        if file.ends_with("warden-cp.toml") {
            let line = "address = \"https://openbao:8200\"";
            assert_eq!(text.matches(line).count(), 1, "warden-cp.toml: {line}");
            text = text.replace(line, &format!("address = \"https://127.0.0.1:{bao_port}\""));
            let ca = text
                .lines()
                .find_map(|l| l.strip_prefix("ca_file = \""))
                .and_then(|l| l.split('"').next())
                .expect("warden-cp.toml: the OpenBao ca_file")
                .to_owned();
            let mapped = cp_mounts
                .map(&ca)
                .expect("the CA file is on a mounted volume");
            assert!(Path::new(&mapped).exists(), "OpenBao wrote no {ca}");
            text = text.replace(&format!("\"{ca}\""), &format!("\"{mapped}\""));
        }
        std::fs::write(&configs[name.as_str().unwrap()], text).unwrap();
    }
    // secrets: the master key as the README makes it; the node token comes later.
    let master_key = base64::engine::general_purpose::STANDARD.encode(
        (0..2)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect::<Vec<u8>>(),
    );
    std::fs::write(dir.join("secrets/warden-master-key"), &master_key).unwrap();

    // The control plane's environment: compose `environment:` + what secrets/warden-cp.env
    // holds in Compose (the database URL, the OpenBao token) + the rewrites above.
    let toml_grpc_addr = std::fs::read_to_string(&configs["warden-cp-toml"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("grpc_addr = \""))
        .and_then(|l| l.split('"').next())
        .expect("warden-cp.toml: grpc_addr")
        .to_owned();
    assert_eq!(
        with_port(&toml_grpc_addr, CP_CONTAINER_PORT),
        toml_grpc_addr
    );
    let cp_env = |svc: &Value, mounts: &Mounts, grpc: u16, ops: Option<u16>| {
        let mut env = environment(svc);
        for file in strings(&svc["env_file"]) {
            assert_eq!(file, "./secrets/warden-cp.env", "a new env file to mirror");
        }
        env.insert("WARDEN_DATABASE_URL".into(), database_url.clone());
        env.insert("BAO_TOKEN".into(), bao_token.clone());
        env.insert("WARDEN_DATABASE_SCHEMA".into(), schema.clone());
        env.insert("WARDEN_REDIS_PREFIX".into(), redis_prefix.clone());
        if let Some(url) = env.get_mut("WARDEN_REDIS_URL") {
            *url = redis_url.clone();
        }
        let master = mounts.map("/run/secrets/warden-master-key").unwrap();
        env.insert("WARDEN_MASTER_KEY_FILE".into(), master);
        env.insert(
            "WARDEN_DATA_DIR".into(),
            mounts.map("/var/lib/warden").expect("a data volume"),
        );
        env.insert("WARDEN_GRPC_ADDR".into(), with_port(&toml_grpc_addr, grpc));
        match ops {
            Some(p) => {
                let addr = with_port(&env["WARDEN_OPS_ADDR"], p);
                env.insert("WARDEN_OPS_ADDR".into(), addr);
            }
            None => assert!(!env.contains_key("WARDEN_OPS_ADDR")),
        }
        env
    };

    // 1. The init job: the first admin credential into its volume.
    let boot = service(&doc, "warden-bootstrap");
    let mounts = Mounts::of(&doc, boot, dir, &configs);
    let args = mounts.map_all(&strings(&boot["command"]));
    assert!(args.iter().any(|a| a == "bootstrap-admin"), "{args:?}");
    let env = cp_env(boot, &mounts, free_port().unwrap(), None);
    let run_bootstrap = || {
        let out = Command::new(bin("warden-cp").unwrap())
            .args(&args)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "warden-bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_bootstrap();
    let token_file = mounts.map("/var/lib/warden-bootstrap/admin.token").unwrap();
    let admin = std::fs::read_to_string(&token_file).unwrap();
    let admin = admin.trim();
    assert!(
        admin.starts_with("wa_"),
        "no admin credential in the volume"
    );

    // 2. Both replicas, each with its own ports, on one schema.
    let (warden_cp, warden_dp) = (bin("warden-cp").unwrap(), bin("warden-dp").unwrap());
    let mut cp_ports = BTreeMap::new();
    for name in REPLICAS {
        let svc = service(&doc, name);
        let mounts = Mounts::of(&doc, svc, dir, &configs);
        let deps = svc["depends_on"].as_mapping().unwrap();
        assert_eq!(
            deps.get("warden-bootstrap").unwrap()["condition"],
            "service_completed_successfully"
        );
        let (grpc, ops) = (free_port().unwrap(), free_port().unwrap());
        let env = cp_env(svc, &mounts, grpc, Some(ops));
        let args = mounts.map_all(&strings(&svc["command"]));
        procs
            .0
            .push((name.to_owned(), spawn(dir, name, &warden_cp, &args, &env)));
        wait_ok(
            &mut procs,
            &http,
            &format!("http://127.0.0.1:{ops}/healthz"),
            name,
            dir,
        )
        .await;
        cp_ports.insert(name, grpc);
    }
    // A second `docker compose up` runs the job again beside the live replicas: it must
    // succeed (the replicas wait for it) and issue nothing.
    run_bootstrap();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), admin);
    let cp1 = format!("http://127.0.0.1:{}", cp_ports["warden-cp-1"]);
    let cp2 = format!("http://127.0.0.1:{}", cp_ports["warden-cp-2"]);

    // 3. The README's steps: a node credential into secrets/node.token, a provider (the
    // mock; its key goes to OpenBao) and a model, through replica 1.
    let node_token = ctl(
        &cp1,
        admin,
        &["node", "credential", "issue", "--name", "compose-nodes"],
        None,
    );
    assert!(node_token.starts_with("wn_"));
    std::fs::write(dir.join("secrets/warden-node-token"), &node_token).unwrap();
    let mock = MockUpstream::start().await.unwrap();
    ctl(
        &cp1,
        admin,
        &[
            "provider",
            "add",
            "mock",
            "--format",
            "openai",
            "--base-url",
            &mock.base_url(),
        ],
        None,
    );
    ctl(
        &cp1,
        admin,
        &["provider", "key", "add", "mock"],
        Some("sk-compose-topology-key"),
    );
    ctl(
        &cp2,
        admin,
        &[
            "model",
            "add",
            "gpt-compose",
            "--provider",
            "mock",
            "--upstream-model",
            "mock-model",
        ],
        None,
    );

    // 4. Both nodes: warden-dp.env + the Compose command (--cp-addr: both replicas).
    let mut node_ports = Vec::new();
    for name in NODES {
        let svc = service(&doc, name);
        let mounts = Mounts::of(&doc, svc, dir, &configs);
        let mut env = BTreeMap::new();
        for file in strings(&svc["env_file"]) {
            env.extend(env_file(&compose_dir().join(file)));
        }
        env.extend(environment(svc));
        let (port, ops) = (free_port().unwrap(), free_port().unwrap());
        for (key, value) in [
            (
                "WARDEN_HTTP_ADDR",
                with_port(&env["WARDEN_HTTP_ADDR"], port),
            ),
            ("WARDEN_OPS_ADDR", with_port(&env["WARDEN_OPS_ADDR"], ops)),
            ("WARDEN_REDIS_URL", redis_url.clone()),
            ("WARDEN_REDIS_PREFIX", redis_prefix.clone()),
            ("WARDEN_EGRESS_ALLOW", "127.0.0.1".to_owned()),
        ] {
            assert!(
                env.insert(key.to_owned(), value).is_some(),
                "warden-dp.env no longer sets {key}"
            );
        }
        for key in ["WARDEN_NODE_TOKEN_FILE", "WARDEN_AUDIT_SPOOL_DIR"] {
            let mapped = mounts
                .map(&env[key])
                .unwrap_or_else(|| panic!("{name}: {key} is on no mounted secret or volume"));
            env.insert(key.to_owned(), mapped);
        }
        let mut args = strings(&svc["command"]);
        let i = args.iter().position(|a| a == "--cp-addr").unwrap();
        let mut addrs = args[i + 1].clone();
        for (replica, grpc) in &cp_ports {
            let from = format!("http://{replica}:{CP_CONTAINER_PORT}");
            assert!(addrs.contains(&from), "{name}: --cp-addr without {replica}");
            addrs = addrs.replace(&from, &format!("http://127.0.0.1:{grpc}"));
        }
        args[i + 1] = addrs;
        procs
            .0
            .push((name.to_owned(), spawn(dir, name, &warden_dp, &args, &env)));
        node_ports.push((name, port, ops));
    }
    for (name, _, ops) in &node_ports {
        wait_ok(
            &mut procs,
            &http,
            &format!("http://127.0.0.1:{ops}/readyz"),
            name,
            dir,
        )
        .await;
    }

    // 5. A first token, and a chat through each node.
    let token = ctl(
        &cp2,
        admin,
        &[
            "token",
            "issue",
            "--subject",
            "compose",
            "--models",
            "gpt-compose",
            "--ttl",
            "1h",
        ],
        None,
    );
    for (name, port, _) in &node_ports {
        let r = http
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&TestCluster::chat_body(
                "gpt-compose",
                &format!("hello {name}"),
                false,
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 200, "{name}: {body}\n{}", logs(dir));
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("mock: hello {name}"),
            "{name}"
        );
    }
    let seen = mock.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer sk-compose-topology-key")),
        "the key read back from OpenBao reached the provider"
    );
    let nodes: serde_json::Value =
        serde_json::from_str(&ctl(&cp1, admin, &["nodes", "-o", "json"], None)).unwrap();
    for id in ["edge-1", "edge-2"] {
        assert!(
            nodes["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["node_id"] == id),
            "{id} not in {nodes}"
        );
    }
    assert!(procs.exited().is_none(), "{}", logs(dir));
    drop(procs);
    let _ = Command::new("psql")
        .arg(&database_url)
        .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .output();
    println!("compose topology: {:.1} s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() < Duration::from_secs(60));
}
