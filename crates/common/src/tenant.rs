//! Tenancy: the tenant of a request comes from the `X-Scope-OrgID` header, or
//! is `fake` when multi-tenancy is off (as in Loki).

use axum::http::HeaderMap;

/// The HTTP header (and gRPC metadata key, lowercased) carrying the tenant.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";
/// gRPC metadata key carrying the tenant.
pub const ORG_ID_METADATA: &str = "x-scope-orgid";
/// The tenant used when multi-tenancy is off.
pub const DEFAULT_TENANT: &str = "fake";
const MAX_TENANT_LEN: usize = 150;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("no org id: set the X-Scope-OrgID header")]
    Missing,
    #[error(
        "tenant id {0:?} is invalid: use at most 150 characters of [a-zA-Z0-9!-_.*'()], not '.' or '..'"
    )]
    Invalid(String),
}

/// Checks a tenant ID as Loki does.
pub fn validate_tenant(id: &str) -> Result<(), TenantError> {
    let valid_char = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
    };
    if id.is_empty()
        || id.len() > MAX_TENANT_LEN
        || id == "."
        || id == ".."
        || !id.chars().all(valid_char)
    {
        return Err(TenantError::Invalid(id.to_string()));
    }
    Ok(())
}

/// The tenant of a request. With multi-tenancy off every request belongs to
/// `fake`, whatever header it carries.
pub fn tenant_from_headers(headers: &HeaderMap, multi_tenant: bool) -> Result<String, TenantError> {
    if !multi_tenant {
        return Ok(DEFAULT_TENANT.to_string());
    }
    let value = headers
        .get(ORG_ID_HEADER)
        .ok_or(TenantError::Missing)?
        .to_str()
        .map_err(|_| TenantError::Invalid("<non-ascii>".to_string()))?
        .trim();
    if value.is_empty() {
        return Err(TenantError::Missing);
    }
    validate_tenant(value)?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_tenant_ignores_header() {
        let mut headers = HeaderMap::new();
        headers.insert(ORG_ID_HEADER, "team-a".parse().unwrap());
        assert_eq!(tenant_from_headers(&headers, false).unwrap(), "fake");
        assert_eq!(tenant_from_headers(&headers, true).unwrap(), "team-a");
    }

    #[test]
    fn multi_tenant_requires_valid_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            tenant_from_headers(&headers, true),
            Err(TenantError::Missing)
        );
        headers.insert(ORG_ID_HEADER, "a/b".parse().unwrap());
        assert!(matches!(
            tenant_from_headers(&headers, true),
            Err(TenantError::Invalid(_))
        ));
        headers.insert(ORG_ID_HEADER, "..".parse().unwrap());
        assert!(tenant_from_headers(&headers, true).is_err());
    }
}
