//! `[secrets]` of the control plane's configuration: which backend stores new provider
//! keys, how often references are polled for rotation, and the start-up cache.

use std::time::Duration;

use super::{ConfigError, SecretsConfig, invalid};

pub(super) fn build_secrets(
    store: Option<String>,
    poll_interval: Option<String>,
    startup: Option<String>,
    mut backends: Vec<crate::secrets::config::SecretBackendConfig>,
) -> Result<SecretsConfig, ConfigError> {
    use crate::secrets::config::SecretBackendConfig;
    use crate::secrets::reference::Scheme;
    let store = match store.as_deref().unwrap_or("file") {
        "file" => Scheme::File,
        "vault" => Scheme::Vault,
        "aws" => Scheme::AwsSm,
        "azure" => Scheme::AzureKv,
        other => {
            return Err(invalid(
                "secrets.store",
                format!("`{other}`: expected file, vault, aws or azure"),
            ));
        }
    };
    let poll_interval = match poll_interval {
        Some(text) => humantime::parse_duration(&text)
            .map_err(|e| invalid("secrets.poll_interval", e.to_string()))?,
        None => Duration::from_secs(30),
    };
    if poll_interval < Duration::from_millis(100) {
        return Err(invalid("secrets.poll_interval", "must be at least 100ms"));
    }
    let startup_cache = match startup.as_deref().unwrap_or("refuse") {
        "refuse" => false,
        "cache" => true,
        other => {
            return Err(invalid(
                "secrets.startup",
                format!("`{other}`: expected refuse or cache"),
            ));
        }
    };
    for (i, b) in backends.iter().enumerate() {
        if backends[..i].iter().any(|o| o.scheme() == b.scheme()) {
            return Err(invalid(
                &format!("secrets.backends[{i}].type"),
                format!("a {} backend is configured twice", b.scheme()),
            ));
        }
    }
    if !backends.iter().any(|b| b.scheme() == Scheme::File) {
        backends.push(SecretBackendConfig::File { path: None });
    }
    if !backends.iter().any(|b| b.scheme() == store) {
        return Err(invalid(
            "secrets.store",
            format!("no {store} backend in [[secrets.backends]]"),
        ));
    }
    Ok(SecretsConfig {
        store,
        poll_interval,
        startup_cache,
        backends,
        allowed_ref_prefixes: Vec::new(),
        previous_master_key_files: Vec::new(),
    })
}
