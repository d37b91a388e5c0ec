//! The node's Redis settings from the environment, and the checks of their transport.

use std::time::Duration;

use secrecy::SecretString;

use super::ConfigError;

/// Builds Redis settings from the environment: `WARDEN_REDIS_URL` (`redis://` or
/// `rediss://`, user and password in the URL), or `WARDEN_REDIS_SENTINELS` (comma-separated
/// sentinel URLs) with `WARDEN_REDIS_SENTINEL_SERVICE`, `WARDEN_REDIS_USERNAME` and
/// `WARDEN_REDIS_PASSWORD` for the master, or `WARDEN_REDIS_CLUSTER` (comma-separated seed
/// URLs). `None` when none is set. URLs hold credentials, so they are read from the
/// environment, never from flags.
pub fn redis_from_env(
    env: &std::collections::HashMap<String, String>,
    prefix: String,
) -> Result<Option<crate::redis_state::redis::RedisSettings>, String> {
    use crate::redis_state::redis::{RedisSettings, Topology};
    let list = |v: &str| -> Vec<SecretString> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect()
    };
    let topology = if let Some(url) = env.get("WARDEN_REDIS_URL").filter(|v| !v.is_empty()) {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
        {
            return Err("WARDEN_REDIS_URL must start with redis://, rediss:// or unix://".into());
        }
        Topology::Single(SecretString::from(url.clone()))
    } else if let Some(v) = env.get("WARDEN_REDIS_SENTINELS").filter(|v| !v.is_empty()) {
        let service = env
            .get("WARDEN_REDIS_SENTINEL_SERVICE")
            .cloned()
            .ok_or("WARDEN_REDIS_SENTINELS needs WARDEN_REDIS_SENTINEL_SERVICE")?;
        Topology::Sentinel {
            urls: list(v),
            service,
            master_username: env.get("WARDEN_REDIS_USERNAME").cloned(),
            master_password: env
                .get("WARDEN_REDIS_PASSWORD")
                .map(|p| SecretString::from(p.clone())),
        }
    } else if let Some(v) = env.get("WARDEN_REDIS_CLUSTER").filter(|v| !v.is_empty()) {
        Topology::Cluster(list(v))
    } else {
        return Ok(None);
    };
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err("the redis key prefix must be non-empty and contain no braces".into());
    }
    Ok(Some(RedisSettings {
        topology,
        prefix,
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(250),
        root_ca: None,
    }))
}

/// The host of the first plain `redis://` URL of `settings` that is not loopback, if any
/// (`rediss://` and `unix://` are not plain across a network).
pub(super) fn plain_remote_redis(
    settings: &crate::redis_state::redis::RedisSettings,
) -> Option<String> {
    use crate::redis_state::redis::Topology;
    use secrecy::ExposeSecret as _;
    let urls = match &settings.topology {
        Topology::Single(url) => std::slice::from_ref(url),
        Topology::Cluster(urls) | Topology::Sentinel { urls, .. } => urls.as_slice(),
    };
    urls.iter().find_map(|url| {
        let rest = url.expose_secret().strip_prefix("redis://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = warden_core::plaintext::authority_host(authority);
        (!warden_core::plaintext::is_loopback_host(host)).then(|| host.to_owned())
    })
}

/// Checks that `--redis-ca-file` applies to `settings`: every URL `rediss://` (a CA for a
/// plain link would be ignored), and no Sentinel (its TLS is not wired yet).
pub(super) fn redis_tls_ca(
    settings: &crate::redis_state::redis::RedisSettings,
) -> Result<(), ConfigError> {
    use crate::redis_state::redis::Topology;
    use secrecy::ExposeSecret as _;
    let urls = match &settings.topology {
        Topology::Single(url) => std::slice::from_ref(url),
        Topology::Cluster(urls) => urls.as_slice(),
        Topology::Sentinel { .. } => {
            return Err(ConfigError::Redis(
                "--redis-ca-file is not supported with WARDEN_REDIS_SENTINELS".into(),
            ));
        }
    };
    if urls
        .iter()
        .any(|u| !u.expose_secret().starts_with("rediss://"))
    {
        return Err(ConfigError::Redis(
            "--redis-ca-file needs rediss:// URLs (TLS); the Redis URL is plain redis://".into(),
        ));
    }
    Ok(())
}
