//! What an issued credential may do: the scopes and model allow-list of a JWT or a virtual
//! key, checked and normalised the same way for both.

use warden_core::jwt::Scope;

use crate::domain::validate_name;
use crate::error::ServiceError;

/// Normalises a scope list: empty → read + write; unknown names are an error.
pub(super) fn parse_scopes(scopes: &[String]) -> Result<Vec<String>, ServiceError> {
    if scopes.is_empty() {
        return Ok(vec!["read".into(), "write".into()]);
    }
    let mut out = Vec::new();
    for s in scopes {
        let scope = Scope::parse(s.trim()).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "unknown scope `{s}` (expected read, write, admin, audit or responses_state)"
            ))
        })?;
        if !out.iter().any(|o: &String| o == scope.as_str()) {
            out.push(scope.as_str().to_owned());
        }
    }
    Ok(out)
}

/// Normalises a model allow-list: empty → `*`.
pub(super) fn parse_models(models: &[String]) -> Result<Vec<String>, ServiceError> {
    if models.is_empty() {
        return Ok(vec!["*".into()]);
    }
    let mut out = Vec::new();
    for m in models {
        let m = m.trim();
        // `*` is every alias; `provider:*` every model of a provider (`provider:model`
        // addressing); `*:*` every model of every provider.
        let checked = m.strip_suffix(":*").unwrap_or(m);
        if m != "*" && m != "*:*" {
            validate_name(checked)
                .map_err(|e| ServiceError::InvalidArgument(format!("model `{m}`: {e}")))?;
        }
        if !out.iter().any(|o: &String| o == m) {
            out.push(m.to_owned());
        }
    }
    Ok(out)
}
