//! Warden's control plane (`warden-cp`): owns the secrets, issues credentials, keeps the
//! state store and audit rows, and streams versioned snapshots to data-plane nodes.
//!
//! Start reading at [`start`] (how the pieces are assembled from a [`config::Config`] by
//! [`open`] and served; `warden-cp`, `wardenctl dev` and the tests all start the control
//! plane this way) and [`service::ControlPlane`] (every admin operation). The gRPC edge is
//! in [`grpc`].

pub mod audit;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod healthcheck;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod reload;
pub mod secrets;
pub mod service;
pub mod snapshot;
mod startup_lock;
pub mod store;
pub mod tls;
pub mod usage;

use std::path::Path;
use std::sync::Arc;

use secrecy::{SecretBox, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warden_proto::admin::v1::admin_server::AdminServer;
use warden_proto::audit::v1::audit_stream_server::AuditStreamServer;
use warden_proto::sync::v1::sync_server::SyncServer;

pub use config::Config;
pub use error::ServiceError;
pub use service::ControlPlane;

use crate::config::MasterKeySource;
use crate::domain::{ApiFormat, Source};
use crate::secrets::cipher::MasterKey;
use crate::service::Actor;

/// Errors starting or running the control plane.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("secrets: {0}")]
    Secret(#[from] secrets::SecretError),
    #[error("audit: {0}")]
    Audit(String),
    #[error("listener: {0}")]
    Listener(std::io::Error),
    #[error("grpc server task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Name of the built-in offline provider and model of dev mode.
pub const ECHO: &str = "echo";

async fn load_master_key(source: &MasterKeySource) -> Result<MasterKey, RunError> {
    let parse = |text: &str| {
        MasterKey::from_base64(&SecretBox::from(text))
            .map_err(|e| RunError::MasterKey(e.to_string()))
    };
    match source {
        MasterKeySource::Value(v) => {
            MasterKey::from_base64(v).map_err(|e| RunError::MasterKey(e.to_string()))
        }
        MasterKeySource::File(path) => {
            let text =
                zeroize::Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
                    RunError::MasterKey(format!("cannot read {}: {e}", path.display()))
                })?);
            parse(&text)
        }
        MasterKeySource::DevFile(path) => match tokio::fs::read_to_string(path).await {
            Ok(text) => parse(&zeroize::Zeroizing::new(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = MasterKey::generate_base64();
                write_private(path, fresh.as_bytes()).await.map_err(|e| {
                    RunError::MasterKey(format!("cannot write {}: {e}", path.display()))
                })?;
                tracing::warn!(path = %path.display(), "dev mode: generated a master key file; do not use dev mode in production");
                parse(&fresh)
            }
            Err(e) => Err(RunError::MasterKey(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        },
    }
}

/// The master key ring of `config`: the master key, which seals, and the previous keys
/// (`[secrets] previous_master_key_files`), which only read values not yet re-encrypted.
async fn load_master_keys(config: &Config) -> Result<MasterKey, RunError> {
    let mut previous = Vec::new();
    for path in &config.secrets.previous_master_key_files {
        previous.push(load_master_key(&MasterKeySource::File(path.clone())).await?);
    }
    Ok(load_master_key(&config.master_key)
        .await?
        .with_previous(previous))
}

async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).await?;
    f.write_all(bytes).await?;
    f.sync_all().await
}

/// Opens the stores under the data directory, loads keys, applies the providers and models
/// declared in the config (and the built-in `echo` provider in dev mode), and publishes the
/// first snapshot. Admin credentials are the caller's business
/// ([`ControlPlane::bootstrap_admin`] for `warden-cp`, a fresh one per start for
/// `wardenctl dev`).
pub async fn open(config: &Config) -> Result<Arc<ControlPlane>, RunError> {
    Ok(open_with_store(config).await?.0)
}

/// [`open`], and the state store the control plane runs on (the cluster's leader work
/// writes through a fenced copy of it).
async fn open_with_store(
    config: &Config,
) -> Result<(Arc<ControlPlane>, store::SqlStore), RunError> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(|source| RunError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|source| RunError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
    }
    let master = Arc::new(load_master_keys(config).await?);
    if master.kids().nth(1).is_some() {
        let previous: Vec<&str> = master.kids().skip(1).collect();
        tracing::info!(
            master_key = master.kid(),
            previous = %previous.join(","),
            "previous master keys configured: they only read; run `warden-cp migrate rotate-master-key`, then remove them"
        );
    }
    let resolver = secrets::config::SecretResolver::from_configs(
        &config.secrets.backends,
        &config.env.0,
        Arc::clone(&master),
        &config.data_dir,
    )
    .await?;
    let startup_cache = config.secrets.startup_cache.then(|| {
        secrets::file::FileSecretStore::with_shared_key(
            config.data_dir.join("secret-cache.json"),
            Arc::clone(&master),
        )
    });
    let keys = Arc::new(
        secrets::manager::SecretManager::new(resolver, config.secrets.store, startup_cache)?
            .with_allowed_prefixes(config.secrets.allowed_ref_prefixes.clone()),
    );
    // With SQLite the control plane is one process: a second one on the same data
    // directory is refused before it touches the database.
    let data_dir_lock = match config.database_url {
        None => Some(startup_lock::lock_data_dir(&config.data_dir)?),
        Some(_) => None,
    };
    let (sql_store, unverified_db_tls) = open_state_store(config).await?;
    let store: Arc<dyn store::StateStore> = Arc::new(sql_store.clone());
    let redis_ca = match &config.redis_ca_file {
        Some(path) => Some(
            warden_core::ca_bundle::read("redis.ca_file", path)
                .map_err(|e| RunError::Tls(e.to_string()))?,
        ),
        None => None,
    };
    let usage = usage::UsageReader::new(
        config
            .redis_url
            .as_ref()
            .map(|u| SecretBox::from(secrecy::ExposeSecret::expose_secret(u))),
        config.redis_prefix.clone(),
        redis_ca,
    );
    // Warden's own secrets live in the state store (`secrets::own`); a data directory from
    // before keeps them in secrets.json: copied into the table here, removed from the file
    // once the move is audited.
    let legacy = secrets::file::FileSecretStore::with_shared_key(
        config.data_dir.join("secrets.json"),
        Arc::clone(&master),
    );
    let own = secrets::own::OwnSecrets::new(Arc::clone(&store), Arc::clone(&master));
    let import = own.import_from_file(&legacy).await?;
    let secrets: Arc<dyn secrets::SecretStore> = Arc::new(own);
    // Replicas starting together on an empty database create one pepper, one signer and
    // apply the declarations one at a time: under a PostgreSQL advisory lock.
    let init_lock = startup_lock::InitLock::take(&sql_store).await?;
    let cp = Arc::new(ControlPlane::open(store, secrets, keys, config.auth.clone(), usage).await?);
    if let Some(lock) = data_dir_lock {
        cp.hold_lock(lock);
    }
    finish_own_secret_move(&cp, &legacy, &import).await?;
    cp.set_node_ingest_quota(
        config.audit.node_ingest_rate,
        config.audit.node_ingest_burst,
    )
    .map_err(|e| RunError::Audit(e.to_string()))?;
    cp.load_provider_keys(config.dev).await?;
    apply_declarations(&cp, config).await?;
    init_lock.release().await;
    spawn_secret_poll(&cp, config.secrets.poll_interval);
    cp.set_failed_login_limit(config.max_failed_logins_per_minute);
    spawn_failed_login_flush(&cp);
    if config.auth.algorithm == warden_core::jwt::SigningAlgorithm::HS256 {
        tracing::warn!(
            "JWTs are signed with HS256: every node holds the signing secret and a compromised node can mint tokens"
        );
    }
    record_dangerous_settings(&cp, config, unverified_db_tls).await;
    Ok((cp, sql_store))
}

/// Records the move of Warden's own secrets out of `legacy` into the state store (a log
/// line and one `secret.migrate` audit row, names only) and then deletes them from the
/// file. Runs only when the file held any; a crash before the delete repeats it once.
async fn finish_own_secret_move(
    cp: &ControlPlane,
    legacy: &secrets::file::FileSecretStore,
    import: &secrets::own::FileImport,
) -> Result<(), RunError> {
    if import.is_empty() {
        return Ok(());
    }
    let moved: Vec<&str> = import.moved().map(String::as_str).collect();
    let file = legacy.path().display().to_string();
    if !import.conflicting.is_empty() {
        tracing::warn!(
            file,
            names = %import.conflicting.join(","),
            "the state store already holds different values for these own secrets; using the store's and leaving the file's in place"
        );
    }
    if !moved.is_empty() {
        tracing::info!(file, names = %moved.join(","), "moved Warden's own secrets into the state store (warden_secrets)");
    }
    let detail = warden_core::audit_detail::Detail::new()
        .with("from", &file)
        .with("names", moved.join(","))
        .with("conflicting", import.conflicting.join(","))
        .build();
    let result = if import.conflicting.is_empty() {
        "ok"
    } else {
        "conflict"
    };
    cp.audit(
        "secret.migrate",
        "system:startup",
        "warden_secrets",
        result,
        &detail,
    )
    .await;
    import.remove_from(legacy).await?;
    Ok(())
}

/// Appends one `cp.dangerous_settings` audit row naming the settings in effect that weaken
/// the control plane's guarantees (none: no row).
async fn record_dangerous_settings(cp: &ControlPlane, config: &Config, unverified_db_tls: bool) {
    let mut detail = warden_core::audit_detail::Detail::new();
    let mut any = false;
    if config.tls.is_none() && !config.grpc_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %config.grpc_addr,
            "gRPC without TLS on a non-loopback address (allow_plaintext): admin and node credentials and sealed snapshots cross the network readable"
        );
        detail = detail.with("allow_plaintext", true);
        any = true;
    }
    if config.auth.algorithm == warden_core::jwt::SigningAlgorithm::HS256 {
        detail = detail.with("jwt_algorithm", "HS256");
        any = true;
    }
    if unverified_db_tls {
        detail = detail.with("unverified_db_tls", true);
        any = true;
    }
    if any {
        cp.audit(
            "cp.dangerous_settings",
            "system:config",
            "control-plane",
            "in_effect",
            &detail.build(),
        )
        .await;
    }
}

async fn apply_declarations(cp: &ControlPlane, config: &Config) -> Result<(), RunError> {
    let system = Actor("system:config".to_owned());
    if config.dev {
        cp.add_provider(
            &system,
            ECHO,
            ApiFormat::Echo,
            "builtin:echo",
            Source::Builtin,
            service::ProviderOptions::default(),
        )
        .await?;
        cp.add_model(&system, ECHO, ECHO, ECHO, Source::Builtin, &[], None)
            .await?;
    }
    for p in &config.providers {
        cp.add_provider(
            &system,
            &p.name,
            p.format,
            &p.base_url,
            Source::Config,
            service::ProviderOptions {
                passthrough: p.passthrough,
                drop_params: p.drop_params.clone(),
                ca_pem: p.ca_pem.clone(),
            },
        )
        .await?;
        let (_, existing) = cp.list_providers().await?;
        for reference in &p.keys {
            let text = reference.to_string();
            if existing.iter().any(|k| {
                k.provider == p.name && secrets::manager::canonical(&k.secret_name) == text
            }) {
                continue;
            }
            match cp
                .add_provider_key(&system, &p.name, service::KeySource::Declared(text))
                .await
            {
                Ok(_) | Err(ServiceError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for m in &config.models {
        let price = config
            .prices
            .iter()
            .find(|(alias, _)| alias == &m.alias)
            .map(|(_, p)| *p);
        cp.add_model(
            &system,
            &m.alias,
            &m.provider,
            &m.upstream_model,
            Source::Config,
            &m.fallbacks,
            price,
        )
        .await?;
    }
    // Prices for models managed over the Admin API are kept as well.
    for (alias, price) in &config.prices {
        cp.set_price(alias, *price).await?;
    }
    if let Some(limits) = config.global_limits {
        cp.set_policy(
            &system,
            &domain::PolicyTarget::Global,
            limits,
            Source::Config,
        )
        .await?;
    }
    // DLP rules: the file's, and none of an earlier file's that it no longer declares.
    for r in cp.list_dlp_rules().await? {
        if r.source == Source::Config && !config.dlp_rules.iter().any(|d| d.name == r.spec.name) {
            cp.remove_dlp_rule(&system, &r.spec.name).await?;
        }
    }
    for spec in &config.dlp_rules {
        cp.add_dlp_rule(&system, spec.clone(), Source::Config)
            .await?;
    }
    if let Some(access) = config.global_access.clone() {
        cp.set_access_policy(
            &system,
            &domain::PolicyTarget::Global,
            access,
            Source::Config,
        )
        .await?;
    }
    Ok(())
}

/// The encrypted files under the data directory that hold secret values: the `file`
/// provider-key backend and, when present, the start-up cache (for `warden-cp migrate
/// encrypt[-status]`). Warden's own secrets are not among them: they live in the state
/// store (`secrets::own`), always encrypted.
pub async fn secret_files(
    config: &Config,
) -> Result<Vec<secrets::file::FileSecretStore>, RunError> {
    let master = Arc::new(load_master_keys(config).await?);
    Ok(secret_files_under(config, &master))
}

fn secret_files_under(
    config: &Config,
    master: &Arc<MasterKey>,
) -> Vec<secrets::file::FileSecretStore> {
    let mut files = Vec::new();
    let mut paths = vec![config.data_dir.join("secrets.json")];
    for b in &config.secrets.backends {
        if let secrets::config::SecretBackendConfig::File { path: Some(p) } = b {
            paths.push(p.clone());
        }
    }
    paths.push(config.data_dir.join("secret-cache.json"));
    paths.dedup();
    for path in paths {
        if path.exists() {
            files.push(secrets::file::FileSecretStore::with_shared_key(
                path,
                Arc::clone(master),
            ));
        }
    }
    files
}

/// `warden-cp encrypt-value --name VAR`: `value` sealed under the current master key for
/// the environment variable `VAR` (its name bound as associated data), as an `env://VAR`
/// reference reads it.
pub async fn encrypt_value(
    config: &Config,
    var: &str,
    value: &SecretString,
) -> Result<String, RunError> {
    let reference = format!("env://{var}");
    secrets::reference::SecretReference::parse(&reference)?;
    let master = load_master_keys(config).await?;
    master
        .encrypt(var, secrecy::ExposeSecret::expose_secret(value).as_bytes())
        .map_err(|e| RunError::MasterKey(e.to_string()))
}

/// `warden-cp migrate rotate-master-key --new-key-file F`: re-encrypts every value under
/// the master key (and the previous keys) under the key in `new_key_file`, in the secret
/// files and the state store's `warden_secrets` table, and appends a `master_key.rotate`
/// audit row with the counts (see [`secrets::rotation`]). Idempotent; run it again after an
/// interruption.
pub async fn rotate_master_key(
    config: &Config,
    new_key_file: &Path,
) -> Result<secrets::rotation::Rotation, RunError> {
    let old = load_master_keys(config).await?;
    let new = load_master_key(&MasterKeySource::File(new_key_file.to_path_buf())).await?;
    let ring = Arc::new(new.with_previous([old]));
    let (store, _) = open_state_store(config).await?;
    let store: Arc<dyn store::StateStore> = Arc::new(store);
    let files = secret_files_under(config, &ring);
    let own = secrets::own::OwnSecrets::new(Arc::clone(&store), Arc::clone(&ring));
    let rotation = secrets::rotation::rotate(&files, &own, &config.env.0, &ring).await?;
    let record = domain::AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        timestamp_ms: warden_core::unix_now().saturating_mul(1000),
        action: "master_key.rotate".into(),
        actor: "system:migrate".into(),
        subject: "master_key".into(),
        result: if rotation.reissue_env.is_empty() {
            "ok".into()
        } else {
            "env_pending".into()
        },
        detail: rotation.audit_detail(),
    };
    store.append_audit(&record).await?;
    Ok(rotation)
}

/// Opens the configured state store: PostgreSQL (its TLS checked, see
/// [`store::postgres::TlsVerdict`]) or the embedded SQLite under the data dir. The flag is
/// true when PostgreSQL is reached off loopback without certificate verification (allowed
/// only with `allow_unverified_tls`, a dangerous setting).
async fn open_state_store(config: &Config) -> Result<(store::SqlStore, bool), RunError> {
    let Some(url) = &config.database_url else {
        let sqlite = store::sqlite::SqliteStore::open(&config.data_dir.join("state.db")).await?;
        return Ok((sqlite, false));
    };
    let defaults = store::postgres::PostgresSettings::default();
    let settings = store::postgres::PostgresSettings {
        schema: config.database_schema.clone(),
        allow_unverified_tls: config.allow_unverified_db_tls,
        max_connections: config
            .database_max_connections
            .unwrap_or(defaults.max_connections),
        ..defaults
    };
    let url = SecretString::from(secrecy::ExposeSecret::expose_secret(url).to_owned());
    let unverified = matches!(
        store::postgres::tls_verdict_of(&url)?,
        store::postgres::TlsVerdict::Unverified { .. }
    );
    tracing::info!("state store: PostgreSQL");
    let postgres = store::postgres::PostgresStore::connect(&url, &settings).await?;
    Ok((postgres, unverified))
}

/// One environment variable moved into a backend by [`migrate_env`].
#[derive(Debug, Clone)]
pub struct MigratedVar {
    pub var: String,
    /// The provider whose `keys` named `env://VAR`, if any.
    pub provider: Option<String>,
    pub reference: String,
    pub fingerprint: String,
}

/// `wardenctl secrets migrate --from env`: writes the value of each variable (`vars`, or
/// else every `env://VAR` the config's providers name) into the `target` backend under a
/// name Warden owns, and returns the references to use instead. Values may be `enc:v1:`
/// (decrypted with the master key first). Re-running writes the same names again.
pub async fn migrate_env(
    config: &Config,
    target: secrets::reference::Scheme,
    vars: &[String],
) -> Result<Vec<MigratedVar>, RunError> {
    use secrets::reference::SecretReference;
    let master = Arc::new(load_master_keys(config).await?);
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    if vars.is_empty() {
        for p in &config.providers {
            for k in &p.keys {
                if let SecretReference::Env { var } = k {
                    wanted.push((var.clone(), Some(p.name.clone())));
                }
            }
        }
    } else {
        for var in vars {
            let provider = config.providers.iter().find(|p| {
                p.keys
                    .iter()
                    .any(|k| matches!(k, SecretReference::Env { var: v } if v == var))
            });
            wanted.push((var.clone(), provider.map(|p| p.name.clone())));
        }
    }
    let backend = config
        .secrets
        .backends
        .iter()
        .find(|b| b.scheme() == target)
        .ok_or_else(|| {
            RunError::Secret(secrets::SecretError::config(
                "secrets.backends",
                format!("no {target} backend is configured to migrate into"),
            ))
        })?;
    let store = secrets::config::build(
        backend,
        &config.env.0,
        Arc::clone(&master),
        &config.data_dir,
    )
    .await?;
    let mut out = Vec::new();
    for (var, provider) in wanted {
        let value = secrets::reference::resolve_env(&var, &config.env.0, Some(master.as_ref()))?;
        let name = secrets::manager::owned_name(provider.as_deref().unwrap_or("env"), &var);
        store.put(&name, &value).await?;
        out.push(MigratedVar {
            fingerprint: warden_core::fingerprint::of(
                secrecy::ExposeSecret::expose_secret(&value).as_bytes(),
            ),
            reference: store.reference(&name),
            var,
            provider,
        });
    }
    Ok(out)
}

/// Starts the leader's audit work on `store` until `shutdown`: checkpoint signing and
/// retention (`[audit]`), and the syslog and JSONL exports (`[audit.syslog]`,
/// `[audit.jsonl]`). A bad setting or TLS file fails here, naming the field. Returns the
/// jobs, whose `join` waits for the checkpoint signed at shutdown. With several replicas
/// only the leader runs this, on a store fenced with its lease ([`cluster`]).
pub(crate) async fn start_leader_work(
    cp: &Arc<ControlPlane>,
    store: Arc<dyn store::StateStore>,
    audit_config: &audit::jobs::AuditConfig,
    shutdown: CancellationToken,
) -> Result<audit::jobs::AuditJobs, RunError> {
    cp.set_leader_store(Arc::clone(&store));
    let jobs = audit::jobs::spawn_jobs(
        audit_config.jobs(),
        Arc::clone(&store),
        cp.own_secrets(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| RunError::Audit(e.to_string()))?;
    if let Some(jsonl) = &audit_config.jsonl {
        audit::jsonl::spawn(
            jsonl.clone(),
            Arc::clone(&store),
            Some(cp.audit_wake()),
            shutdown.clone(),
        )
        .await
        .map_err(|e| RunError::Audit(e.to_string()))?;
        tracing::info!(path = %jsonl.path.display(), "writing the audit log to a JSONL file");
    }
    if let Some(syslog) = &audit_config.syslog {
        syslog
            .validate()
            .map_err(|e| RunError::Audit(e.to_string()))?;
        audit::syslog::spawn(syslog.clone(), store, Some(cp.audit_wake()), shutdown)
            .await
            .map_err(|e| RunError::Audit(e.to_string()))?;
        tracing::info!(address = %syslog.address, "forwarding the audit log to syslog");
    }
    Ok(jobs)
}

/// Re-reads referenced secrets every `interval` for as long as the control plane lives.
fn spawn_secret_poll(cp: &Arc<ControlPlane>, interval: std::time::Duration) {
    let weak = Arc::downgrade(cp);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(cp) = weak.upgrade() else { return };
            // Once for the whole cluster: the leader polls and records what it read.
            if !cp.is_leader() {
                continue;
            }
            match cp.poll_provider_keys().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(changed = n, "upstream keys rotated; new snapshot published")
                }
                Err(e) => tracing::error!(error = %e, "secret rotation poll failed"),
            }
        }
    });
}

/// Writes the counted failed-login audit rows as they fall due (one per address and
/// reason a minute), for as long as the control plane lives.
fn spawn_failed_login_flush(cp: &Arc<ControlPlane>) {
    let weak = Arc::downgrade(cp);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cp) = weak.upgrade() else { return };
            cp.flush_failed_logins().await;
        }
    });
}

/// The gRPC server with every request passing [`grpc::limits::EdgeLayer`] first.
type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<grpc::limits::EdgeLayer, tower::layer::util::Identity>,
>;

/// The Admin, Sync and AuditStream services of `cp`, within `limits` (TLS, when
/// configured, is set up by the accept loop: [`grpc::limits::incoming`]); `client_certs`
/// tells the Sync service whether nodes must present a client certificate.
fn router(
    cp: &Arc<ControlPlane>,
    client_certs: tls::ClientCertMode,
    limits: &grpc::limits::ServerLimits,
    shutdown: &CancellationToken,
) -> GrpcRouter {
    let builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    let builder = limits.apply(builder);
    let mut builder = builder
        .trace_fn(grpc::span)
        .layer(grpc::limits::EdgeLayer::new(cp.metrics().clone()));
    // Explicit message limits (warden_proto::GRPC_*_MAX_BYTES, listed in the README): small
    // requests in, snapshots and listings of up to 100,000 virtual keys out.
    let (max_in, max_out) = (
        warden_proto::GRPC_REQUEST_MAX_BYTES,
        warden_proto::GRPC_RESPONSE_MAX_BYTES,
    );
    let admin = AdminServer::new(grpc::admin::AdminService::new(Arc::clone(cp)))
        .max_decoding_message_size(max_in)
        .max_encoding_message_size(max_out);
    let sync = SyncServer::new(
        grpc::sync::SyncService::new(Arc::clone(cp), shutdown.clone())
            .with_client_certs(client_certs),
    )
    .max_decoding_message_size(max_in)
    .max_encoding_message_size(max_out);
    let audit = AuditStreamServer::new(grpc::audit::AuditStreamService::new(
        Arc::clone(cp),
        shutdown.clone(),
    ))
    .max_decoding_message_size(max_in)
    .max_encoding_message_size(max_out);
    builder
        .add_service(admin)
        .add_service(sync)
        .add_service(audit)
}

/// The gRPC listener's TLS settings from `config`, when it serves TLS.
fn tls_settings(config: &Config) -> Option<tls::TlsSettings> {
    config
        .tls
        .as_ref()
        .map(|(cert_file, key_file)| tls::TlsSettings {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            client_certs: config.client_certs.clone(),
            reload_interval: config.tls_reload_interval,
        })
}

/// Opens the control plane for `config` ([`open`]), starts the audit log's background work
/// and serves the Admin, Sync, AuditStream and grpc.health.v1 APIs on `listener` until
/// `shutdown` is cancelled. Returns once it is serving. Admin credentials are the caller's business
/// ([`ControlPlane::bootstrap_admin`] for `warden-cp`, a fresh one per start for
/// `wardenctl dev`).
pub async fn start(
    config: &Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, RunError> {
    let addr = listener.local_addr().map_err(RunError::Listener)?;
    let (cp, sql_store) = open_with_store(config).await?;
    let tls = match tls_settings(config) {
        Some(settings) => {
            let tls = tls::ServerTls::load(settings)
                .await
                .map_err(|e| RunError::Tls(e.to_string()))?;
            tls.spawn_reload(shutdown.clone());
            Some(tls)
        }
        None => None,
    };
    reload::spawn(
        Arc::clone(&cp),
        tls.clone(),
        config.config_file.clone(),
        shutdown.clone(),
    );
    let client_certs = tls
        .as_ref()
        .map_or(tls::ClientCertMode::Off, |t| t.client_cert_mode());
    let router = router(&cp, client_certs, &config.limits, &shutdown)
        .add_service(grpc::health::service(&shutdown).await);
    // New provider keys go into a local file that other replicas cannot read.
    let file_backend = config.secrets.store == secrets::reference::Scheme::File;
    let cluster = cluster::start(
        &cp,
        &sql_store,
        &config.cluster,
        file_backend,
        cluster::LeaderJobs {
            audit: config.audit.clone(),
        },
        shutdown.clone(),
    )
    .await?;
    let ops_addr = match config.ops_addr {
        Some(at) => Some(ops::serve(&cp, at, shutdown.clone()).await?),
        None => None,
    };
    tracing::info!(%addr, tls = config.tls.is_some(), ?client_certs, limits = ?config.limits, "control plane listening");
    let incoming = grpc::limits::incoming(listener, config.limits, cp.metrics().clone(), tls);
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(RunError::from)
    });
    Ok(Running {
        cp,
        addr,
        ops_addr,
        tls: config.tls.is_some(),
        server,
        cluster,
        store: sql_store,
    })
}

/// A control plane that [`start`] has set serving.
pub struct Running {
    cp: Arc<ControlPlane>,
    addr: std::net::SocketAddr,
    ops_addr: Option<std::net::SocketAddr>,
    tls: bool,
    server: tokio::task::JoinHandle<Result<(), RunError>>,
    /// The leader work (always, with SQLite) and, with PostgreSQL, the replica's lease.
    cluster: cluster::Cluster,
    store: store::SqlStore,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The control plane itself, for what the caller does beside the gRPC API (issuing the
    /// first admin credential, say).
    pub fn control_plane(&self) -> &Arc<ControlPlane> {
        &self.cp
    }

    /// [`ControlPlane::bootstrap_admin`] under the start-up lock, so replicas started
    /// together on an empty PostgreSQL create one first admin credential, not several.
    pub async fn bootstrap_admin(&self) -> Result<Option<SecretString>, RunError> {
        let lock = startup_lock::InitLock::take(&self.store).await?;
        let admin = self.cp.bootstrap_admin().await;
        lock.release().await;
        Ok(admin?)
    }

    /// The address the gRPC API listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The address of the ops listener (`/metrics`, `/healthz`), when one was asked for.
    pub fn ops_addr(&self) -> Option<std::net::SocketAddr> {
        self.ops_addr
    }

    /// `http://host:port`, or `https://…` when serving TLS: what clients connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Waits until the server has stopped (after `shutdown`), then for the audit jobs'
    /// last work (the checkpoint that covers everything written before the stop). A server
    /// that fails returns its error at once.
    pub async fn wait(self) -> Result<(), RunError> {
        self.server.await??;
        self.cluster.wait().await;
        Ok(())
    }
}
