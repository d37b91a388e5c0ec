//! Warden's control plane (`warden-cp`): owns the secrets, issues credentials, keeps the
//! state store and audit rows, and streams versioned snapshots to data-plane nodes.
//!
//! Start reading at [`open`] (how the pieces are assembled from a [`config::Config`]) and
//! [`service::ControlPlane`] (every admin operation). The gRPC edge is in [`grpc`].

pub mod audit;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod usage;

use std::path::Path;
use std::sync::Arc;

use secrecy::{SecretBox, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warden_proto::admin::v1::admin_server::AdminServer;
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
    let master = load_master_key(&config.master_key).await?;
    let secrets: Arc<dyn secrets::SecretStore> = Arc::new(secrets::file::FileSecretStore::new(
        config.data_dir.join("secrets.json"),
        master,
    ));
    let store: Arc<dyn store::StateStore> = match &config.database_url {
        Some(url) => {
            let settings = store::postgres::PostgresSettings {
                schema: config.database_schema.clone(),
                ..store::postgres::PostgresSettings::default()
            };
            let url = SecretString::from(secrecy::ExposeSecret::expose_secret(url).to_owned());
            tracing::info!("state store: PostgreSQL");
            Arc::new(store::postgres::PostgresStore::connect(&url, &settings).await?)
        }
        None => {
            Arc::new(store::sqlite::SqliteStore::open(&config.data_dir.join("state.db")).await?)
        }
    };
    let usage = usage::UsageReader::new(
        config
            .redis_url
            .as_ref()
            .map(|u| SecretBox::from(secrecy::ExposeSecret::expose_secret(u))),
        config.redis_prefix.clone(),
    );
    let cp = Arc::new(ControlPlane::open(store, secrets, config.auth.clone(), usage).await?);
    apply_declarations(&cp, config).await?;
    if config.auth.algorithm == warden_core::jwt::SigningAlgorithm::HS256 {
        tracing::warn!(
            "JWTs are signed with HS256: every node holds the signing secret and a compromised node can mint tokens"
        );
    }
    Ok(cp)
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
            },
        )
        .await?;
        for var in &p.key_env {
            let Some(value) = config.provider_key_values.get(var) else {
                continue;
            };
            let value = SecretString::from(secrecy::ExposeSecret::expose_secret(value).to_owned());
            match cp.add_provider_key(&system, &p.name, value).await {
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
    Ok(())
}

/// Serves the Admin and Sync APIs on `listener` until `shutdown` is cancelled.
pub async fn serve(
    cp: Arc<ControlPlane>,
    listener: TcpListener,
    tls: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    if let Some((cert, key)) = tls {
        let cert = tokio::fs::read(cert)
            .await
            .map_err(|e| RunError::Tls(format!("{}: {e}", cert.display())))?;
        let key = tokio::fs::read(key)
            .await
            .map_err(|e| RunError::Tls(format!("{}: {e}", key.display())))?;
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )?;
    }
    let admin = AdminServer::new(grpc::admin::AdminService::new(Arc::clone(&cp)));
    let sync = SyncServer::new(grpc::sync::SyncService::new(
        Arc::clone(&cp),
        shutdown.clone(),
    ));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    builder
        .add_service(admin)
        .add_service(sync)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}
