//! `warden-cp`: the control-plane binary. Parses flags, loads and validates the config,
//! inits telemetry and runs [`warden_control_plane::start`] until SIGINT or SIGTERM; or, for
//! a subcommand, validates the config, migrates the secret files, rotates the master key
//! or encrypts a value for an environment variable.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the binary prints the first admin credential and fatal errors"
)]

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use warden_control_plane::config::RawConfig;

/// Warden control plane: secrets, credentials, audit and snapshots for data-plane nodes.
///
/// Environment: WARDEN_MASTER_KEY (32 bytes, base64) or WARDEN_MASTER_KEY_FILE,
/// WARDEN_PREVIOUS_MASTER_KEY_FILES, WARDEN_GRPC_ADDR, WARDEN_DATA_DIR, WARDEN_DEV, WARDEN_LOG_FORMAT, WARDEN_JWT_ALGORITHM,
/// WARDEN_TLS_CERT_FILE, WARDEN_TLS_KEY_FILE. Environment overrides the file; flags
/// override both. Flags may stand before or after the subcommand.
#[derive(Debug, Parser)]
#[command(name = "warden-cp", version)]
struct Args {
    /// TOML config file.
    #[arg(long, short = 'c', env = "WARDEN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// gRPC listen address (host:port).
    #[arg(long, global = true)]
    grpc_addr: Option<String>,
    /// Directory for the state database and the encrypted secret store.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Dev mode: generates a master key file if none is given and adds the echo provider.
    #[arg(long, global = true)]
    dev: bool,
    /// Write the first admin credential to this file (created, mode 0600) instead of
    /// printing it.
    #[arg(long, global = true, value_name = "FILE")]
    bootstrap_token_out: Option<PathBuf>,
    /// A master key rotated away (repeatable): it still reads values not yet re-encrypted,
    /// never seals new ones. Env: WARDEN_PREVIOUS_MASTER_KEY_FILES (`:`-separated).
    #[arg(long = "previous-master-key-file", global = true, value_name = "FILE")]
    previous_master_key_files: Vec<PathBuf>,
    /// Listener limits, failed-login throttle, ops listener, database TLS (README's
    /// configuration reference; each flag sets the environment variable named).
    #[command(flatten)]
    listener: ListenerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags that set the `[server]`/`[store]` settings of the gRPC listener, the ops listener
/// and the state store's TLS; each one stands for the environment variable in its help.
#[derive(Debug, Default, clap::Args)]
struct ListenerArgs {
    /// HTTP listener for /metrics and /healthz, host:port (WARDEN_OPS_ADDR; off when unset).
    #[arg(long, global = true, value_name = "ADDR")]
    ops_addr: Option<String>,
    /// Deadline of a gRPC call until its response starts (WARDEN_GRPC_REQUEST_TIMEOUT).
    #[arg(long, global = true, value_name = "DURATION")]
    grpc_request_timeout: Option<String>,
    /// Time a new connection has to send its first request (WARDEN_GRPC_HANDSHAKE_TIMEOUT).
    #[arg(long, global = true, value_name = "DURATION")]
    grpc_handshake_timeout: Option<String>,
    /// Open gRPC connections at most (WARDEN_GRPC_MAX_CONNECTIONS).
    #[arg(long, global = true, value_name = "N")]
    grpc_max_connections: Option<String>,
    /// Calls in flight on one connection (WARDEN_GRPC_CONCURRENCY_PER_CONNECTION).
    #[arg(long, global = true, value_name = "N")]
    grpc_concurrency_per_connection: Option<String>,
    /// HTTP/2 streams open on one connection (WARDEN_GRPC_MAX_CONCURRENT_STREAMS).
    #[arg(long, global = true, value_name = "N")]
    grpc_max_concurrent_streams: Option<String>,
    /// Largest HTTP/2 header block (WARDEN_GRPC_MAX_HEADER_LIST_BYTES).
    #[arg(long, global = true, value_name = "BYTES")]
    grpc_max_header_list_bytes: Option<String>,
    /// Failed logins a minute from one address before it is refused for the rest of the
    /// minute (WARDEN_MAX_FAILED_LOGINS_PER_MINUTE).
    #[arg(long, global = true, value_name = "N")]
    max_failed_logins_per_minute: Option<String>,
    /// Dangerous: allow PostgreSQL off loopback without sslmode=verify-full/verify-ca
    /// (WARDEN_ALLOW_UNVERIFIED_DB_TLS; warned about and audited).
    #[arg(long, global = true)]
    allow_unverified_db_tls: bool,
    /// PEM CA bundle that signs client certificates (WARDEN_TLS_CLIENT_CA_FILE; needs TLS):
    /// connections are asked for a certificate signed by it, nodes must present one.
    #[arg(long, global = true, value_name = "PEM")]
    tls_client_ca_file: Option<String>,
    /// With --tls-client-ca-file: `true` (default) fails a handshake without a client
    /// certificate, `false` verifies one only when presented (WARDEN_TLS_REQUIRE_CLIENT_CERTS).
    #[arg(long, global = true, value_name = "BOOL")]
    tls_require_client_certs: Option<String>,
    /// How often the TLS certificate, key and client CA files are re-read; a change applies
    /// to new connections (WARDEN_TLS_RELOAD_INTERVAL, default 10s).
    #[arg(long, global = true, value_name = "DURATION")]
    tls_reload_interval: Option<String>,
    /// PEM CA certificates trusted for a rediss:// WARDEN_REDIS_URL instead of the system's
    /// roots (WARDEN_REDIS_CA_FILE).
    #[arg(long, global = true, value_name = "PEM")]
    redis_ca_file: Option<String>,
}

impl ListenerArgs {
    /// The environment variables these flags stand for.
    fn into_env(self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = [
            ("WARDEN_OPS_ADDR", self.ops_addr),
            ("WARDEN_GRPC_REQUEST_TIMEOUT", self.grpc_request_timeout),
            ("WARDEN_GRPC_HANDSHAKE_TIMEOUT", self.grpc_handshake_timeout),
            ("WARDEN_GRPC_MAX_CONNECTIONS", self.grpc_max_connections),
            (
                "WARDEN_GRPC_CONCURRENCY_PER_CONNECTION",
                self.grpc_concurrency_per_connection,
            ),
            (
                "WARDEN_GRPC_MAX_CONCURRENT_STREAMS",
                self.grpc_max_concurrent_streams,
            ),
            (
                "WARDEN_GRPC_MAX_HEADER_LIST_BYTES",
                self.grpc_max_header_list_bytes,
            ),
            (
                "WARDEN_MAX_FAILED_LOGINS_PER_MINUTE",
                self.max_failed_logins_per_minute,
            ),
            ("WARDEN_TLS_CLIENT_CA_FILE", self.tls_client_ca_file),
            (
                "WARDEN_TLS_REQUIRE_CLIENT_CERTS",
                self.tls_require_client_certs,
            ),
            ("WARDEN_TLS_RELOAD_INTERVAL", self.tls_reload_interval),
            ("WARDEN_REDIS_CA_FILE", self.redis_ca_file),
        ]
        .into_iter()
        .filter_map(|(var, value)| value.map(|v| (var, v)))
        .collect();
        if self.allow_unverified_db_tls {
            out.push(("WARDEN_ALLOW_UNVERIFIED_DB_TLS", "true".to_owned()));
        }
        out
    }
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask the gRPC listener's grpc.health.v1 service (at --grpc-addr, WARDEN_GRPC_ADDR or
    /// the config's server.grpc_addr) whether it is SERVING, within 3 s: exit 0 if so,
    /// else 1 with one line on stderr. Needs no master key and no credential.
    Healthcheck(HealthcheckArgs),
    /// Check the config file and environment, then exit.
    Validate,
    /// Data migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Issue the first admin credential now (printed, or written to
    /// `--bootstrap-token-out`), unless this database already has one; of several replicas
    /// running it at once exactly one issues it.
    BootstrapAdmin,
    /// Read a value from stdin and print it encrypted under the master key for the
    /// environment variable VAR (`env://VAR` reads it); the value never goes in argv.
    EncryptValue {
        /// The environment variable that will hold the value (bound into the ciphertext).
        #[arg(long, value_name = "VAR")]
        name: String,
    },
}

/// TLS settings of `warden-cp healthcheck`, as the listener needs them.
#[derive(Debug, clap::Args)]
struct HealthcheckArgs {
    /// CA file that signed the listener's certificate; required when it serves TLS.
    #[arg(long, env = "WARDEN_HEALTHCHECK_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate, for a listener that requires one (with --client-key).
    #[arg(
        long,
        env = "WARDEN_HEALTHCHECK_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// Key of --client-cert.
    #[arg(
        long,
        env = "WARDEN_HEALTHCHECK_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Name the listener's certificate is checked against (default: the address).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Service asked about (default: the whole server).
    #[arg(long, default_value = "")]
    service: String,
}

/// `warden-cp healthcheck`: exits 0 when the listener answers SERVING, else 1.
async fn healthcheck(
    args: &HealthcheckArgs,
    config: Option<&std::path::Path>,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let server = match config {
        Some(path) => RawConfig::from_file(path)?.server,
        None => warden_control_plane::config::RawServer::default(),
    };
    let addr_text = env
        .get("WARDEN_GRPC_ADDR")
        .cloned()
        .or(server.grpc_addr)
        .unwrap_or_else(|| warden_control_plane::config::DEFAULT_GRPC_ADDR.to_owned());
    let addr = addr_text
        .parse()
        .with_context(|| format!("gRPC address `{addr_text}` is not host:port"))?;
    let tls = env.contains_key("WARDEN_TLS_CERT_FILE") || server.tls_cert_file.is_some();
    if tls && args.ca_file.is_none() {
        anyhow::bail!("the listener serves TLS: give --ca-file (WARDEN_HEALTHCHECK_CA_FILE)");
    }
    let probe = warden_control_plane::healthcheck::Probe {
        addr: Some(addr),
        ca_file: args.ca_file.clone(),
        server_name: args.tls_server_name.clone(),
        client_cert: args.client_cert.clone().zip(args.client_key.clone()),
        service: args.service.clone(),
    };
    warden_control_plane::healthcheck::check(&probe)
        .await
        .map_err(anyhow::Error::msg)
}

#[derive(Debug, clap::Subcommand)]
enum MigrateCommand {
    /// Encrypt every plaintext value in the secret files under the master key
    /// (idempotent: encrypted values are left alone).
    Encrypt,
    /// Report how many stored secret values are encrypted and which are not.
    EncryptStatus,
    /// Re-encrypt every value under the master key (secret files, start-up cache, the state
    /// store's warden_secrets) under the key in --new-key-file; idempotent, resumable,
    /// audited (`master_key.rotate`). Lists the env:// variables to re-issue.
    RotateMasterKey {
        /// File holding the new master key (32 bytes, base64).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    warden_core::install_crypto_providers();
    let mut args = Args::parse();
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let listener_args = std::mem::take(&mut args.listener);
    for (var, value) in listener_args.into_env() {
        env.insert(var.to_owned(), value);
    }
    if let Some(a) = &args.grpc_addr {
        env.insert("WARDEN_GRPC_ADDR".into(), a.clone());
    }
    if let Some(d) = &args.data_dir {
        env.insert("WARDEN_DATA_DIR".into(), d.display().to_string());
    }
    if args.dev {
        env.insert("WARDEN_DEV".into(), "true".into());
    }
    if !args.previous_master_key_files.is_empty() {
        let list = std::env::join_paths(&args.previous_master_key_files)
            .context("--previous-master-key-file: a path holds the list separator")?;
        env.insert(
            "WARDEN_PREVIOUS_MASTER_KEY_FILES".into(),
            list.to_string_lossy().into_owned(),
        );
    }
    if let Some(Command::Healthcheck(check)) = &args.command {
        if let Err(e) = healthcheck(check, args.config.as_deref(), &env).await {
            eprintln!("unhealthy: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Some(Command::EncryptValue { name }) = &args.command {
        // The variable being made need not be set yet, though the config may name it.
        env.entry(name.clone())
            .or_insert_with(|| "not-set-yet".into());
    }
    let raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    let mut config = raw.build_and_validate(&env)?;
    config.config_file = args.config.clone();
    drop(env);
    if matches!(args.command, Some(Command::Validate)) {
        println!("config ok");
        return Ok(());
    }
    // Spans are exported by the serving process only, not by the one-shot subcommands.
    let otlp = config.otlp.as_ref().filter(|_| args.command.is_none());
    let telemetry =
        warden_core::telemetry::init_with(config.log_format, config.log_level.as_deref(), otlp)?;
    if let Some(otlp) = otlp {
        tracing::info!(endpoint = %otlp.endpoint, service = %otlp.service_name, sample_ratio = otlp.sample_ratio, "traces exported over OTLP");
    }
    if let Some(Command::Migrate(command)) = &args.command {
        return migrate(&config, command).await;
    }
    if let Some(Command::EncryptValue { name }) = &args.command {
        return encrypt_value(&config, name).await;
    }
    if matches!(args.command, Some(Command::BootstrapAdmin)) {
        let cp = warden_control_plane::open(&config).await?;
        match cp.bootstrap_admin().await? {
            Some(admin) => show_admin(&admin, args.bootstrap_token_out.as_deref())?,
            None => eprintln!(
                "an admin credential already exists; issue more with `wardenctl admin credential issue`"
            ),
        }
        return Ok(());
    }

    let shutdown = CancellationToken::new();
    warden_core::shutdown::cancel_on_signal(&shutdown);
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let running = warden_control_plane::start(&config, listener, shutdown).await?;
    if let Some(admin) = running.bootstrap_admin().await? {
        show_admin(&admin, args.bootstrap_token_out.as_deref())?;
    }
    if let Some(ops) = running.ops_addr() {
        println!("WARDEN_CP_OPS_ADDR=http://{ops}");
    }
    println!("WARDEN_CP_ADDR={}", running.url());
    let waited = running.wait().await;
    // The spans of the last calls go out before the exit.
    telemetry.shutdown().await;
    waited?;
    Ok(())
}

/// Prints the first admin credential once, or writes it to `out` (a new file, mode 0600).
fn show_admin(admin: &secrecy::SecretString, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(path) = out else {
        println!("# first start: the admin credential is shown once; store it now");
        println!("WARDEN_ADMIN_TOKEN={}", admin.expose_secret());
        return Ok(());
    };
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{}", admin.expose_secret())?;
    file.sync_all()?;
    println!(
        "# first start: the admin credential was written to {}",
        path.display()
    );
    Ok(())
}

/// Reads the value from stdin (one trailing newline dropped) and prints its `enc:` form.
async fn encrypt_value(
    config: &warden_control_plane::config::Config,
    var: &str,
) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the value from stdin")?;
    let value = text
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(&text);
    if value.is_empty() {
        anyhow::bail!("no value on stdin: pipe the value in (it is never taken from argv)");
    }
    let sealed = warden_control_plane::encrypt_value(
        config,
        var,
        &secrecy::SecretString::from(value.to_owned()),
    )
    .await?;
    println!("{sealed}");
    Ok(())
}

/// Prints what `migrate rotate-master-key` did, and what is left to the operator.
async fn rotate_master_key(
    config: &warden_control_plane::config::Config,
    new_key_file: &std::path::Path,
) -> anyhow::Result<()> {
    let rotation = warden_control_plane::rotate_master_key(config, new_key_file).await?;
    let from = rotation.from.join(", ");
    for (path, c) in &rotation.files {
        println!(
            "{}: re-encrypted {}, already under the new key {}, plaintext {}",
            path.display(),
            c.resealed,
            c.current,
            c.plaintext
        );
    }
    let t = rotation.table;
    println!(
        "state store warden_secrets: re-encrypted {}, already under the new key {}",
        t.resealed, t.current
    );
    let total = rotation.total();
    println!(
        "master key {} -> {}: {} value(s) re-encrypted, {} already under the new key",
        if from.is_empty() { "-" } else { &from },
        rotation.to,
        total.resealed,
        total.current
    );
    for var in &rotation.reissue_env {
        println!(
            "env://{var} is encrypted under an old key: re-issue it with `warden-cp encrypt-value --name {var}` (new master key) and replace the variable"
        );
    }
    if total.plaintext > 0 {
        println!("run `warden-cp migrate encrypt` to encrypt the plaintext values");
    }
    println!(
        "next: start every replica with the new master key (keep the old one in previous_master_key_files until env:// values are re-issued), then drop the old key"
    );
    Ok(())
}

async fn migrate(
    config: &warden_control_plane::config::Config,
    command: &MigrateCommand,
) -> anyhow::Result<()> {
    if let MigrateCommand::RotateMasterKey { new_key_file } = command {
        return rotate_master_key(config, new_key_file).await;
    }
    let files = warden_control_plane::secret_files(config).await?;
    let mut plaintext = 0;
    for file in &files {
        let path = file.path().display().to_string();
        match command {
            MigrateCommand::Encrypt => {
                let n = file.encrypt_plaintext().await?;
                println!("{path}: encrypted {n} plaintext value(s)");
            }
            MigrateCommand::RotateMasterKey { .. } => {}
            MigrateCommand::EncryptStatus => {
                let status = file.encryption_status().await?;
                plaintext += status.plaintext.len();
                println!(
                    "{path}: {} encrypted, {} plaintext{}",
                    status.encrypted,
                    status.plaintext.len(),
                    if status.plaintext.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", status.plaintext.join(", "))
                    }
                );
                let own = file
                    .names()
                    .await?
                    .into_iter()
                    .filter(|n| n.starts_with(warden_control_plane::secrets::own::OWN_PREFIX))
                    .count();
                if own > 0 {
                    println!(
                        "{path}: {own} of Warden's own secret(s) (warden/…) still here: moved into the state store at the next start"
                    );
                }
            }
        }
    }
    if files.is_empty() {
        println!("no secret files under {}", config.data_dir.display());
    }
    println!(
        "state store: Warden's own secrets (signing keys, pepper, checkpoint key) in table warden_secrets, always encrypted under the master key; provider keys by reference, credentials as HMAC"
    );
    if plaintext > 0 {
        println!("run `warden-cp migrate encrypt` to encrypt the plaintext values");
    }
    Ok(())
}
