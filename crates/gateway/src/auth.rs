//! Authentication and tenancy: anonymous single-tenant mode, basic auth
//! with bcrypt hashes, bearer tokens; each identity maps to tenants.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use lucia_common::tenant::{ORG_ID_HEADER, validate_tenant};
use parking_lot::Mutex;
use subtle::ConstantTimeEq as _;

use crate::config::AuthConfig;

/// Who a request is, and the tenant it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user or token name; `anonymous` without auth.
    pub user: String,
    pub tenant: String,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the identity may not act for the tenant asked for.
    #[error("{0}")]
    Forbidden(String),
}

struct User {
    hash: String,
    tenants: Vec<String>,
}

struct Token {
    name: String,
    sha256: [u8; 32],
    tenants: Vec<String>,
}

/// The configured identities.
pub struct Auth {
    anonymous_tenant: Option<String>,
    users: HashMap<String, User>,
    tokens: Vec<Token>,
    /// SHA-256 of `user:password` pairs that matched their bcrypt hash, so
    /// that bcrypt (tens of milliseconds by design) runs once per password.
    verified: Mutex<HashMap<[u8; 32], ()>>,
}

const MAX_VERIFIED: usize = 10_000;

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Result<Arc<Self>, String> {
        let check_tenants = |who: &str, tenants: &[String]| -> Result<(), String> {
            if tenants.is_empty() {
                return Err(format!("gateway.auth: {who} has no tenants"));
            }
            for tenant in tenants {
                validate_tenant(tenant).map_err(|e| format!("gateway.auth: {who}: {e}"))?;
            }
            Ok(())
        };
        let mut users = HashMap::new();
        for user in &config.users {
            let who = format!("user {:?}", user.username);
            check_tenants(&who, &user.tenants)?;
            if !user.password_bcrypt.starts_with("$2") {
                return Err(format!(
                    "gateway.auth: {who}: password_bcrypt is not a bcrypt hash ($2b$…)"
                ));
            }
            let previous = users.insert(
                user.username.clone(),
                User {
                    hash: user.password_bcrypt.clone(),
                    tenants: user.tenants.clone(),
                },
            );
            if previous.is_some() {
                return Err(format!("gateway.auth: {who} is listed twice"));
            }
        }
        let mut tokens = Vec::new();
        for (i, token) in config.tokens.iter().enumerate() {
            let name = token.name.clone().unwrap_or_else(|| format!("token-{i}"));
            let who = format!("token {name:?}");
            check_tenants(&who, &token.tenants)?;
            let sha256 = match (&token.token, &token.token_sha256) {
                (Some(clear), None) if !clear.is_empty() => sha256(clear.as_bytes()),
                (None, Some(hex)) => parse_hex32(hex).ok_or_else(|| {
                    format!("gateway.auth: {who}: token_sha256 is not 64 hex digits")
                })?,
                _ => {
                    return Err(format!(
                        "gateway.auth: {who}: set exactly one of token and token_sha256"
                    ));
                }
            };
            tokens.push(Token {
                name,
                sha256,
                tenants: token.tenants.clone(),
            });
        }
        let anonymous_tenant = if users.is_empty() && tokens.is_empty() {
            validate_tenant(&config.anonymous_tenant)
                .map_err(|e| format!("gateway.auth.anonymous_tenant: {e}"))?;
            Some(config.anonymous_tenant.clone())
        } else {
            None
        };
        Ok(Arc::new(Self {
            anonymous_tenant,
            users,
            tokens,
            verified: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether requests need credentials.
    pub fn required(&self) -> bool {
        self.anonymous_tenant.is_none()
    }

    /// Authenticates a request and picks its tenant: the `X-Scope-OrgID`
    /// it asks for if the identity may act for it (403 otherwise), else the
    /// identity's first tenant. Anonymous requests always get the
    /// anonymous tenant, whatever header they sent.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        if let Some(tenant) = &self.anonymous_tenant {
            return Ok(Identity {
                user: "anonymous".to_string(),
                tenant: tenant.clone(),
            });
        }
        let (user, tenants) = self.identify(headers).await?;
        let asked = headers
            .get(ORG_ID_HEADER)
            .map(|v| v.to_str().map(str::trim).unwrap_or("<non-ascii>"))
            .filter(|v| !v.is_empty());
        let tenant = match asked {
            None => tenants[0].clone(),
            Some(asked) if tenants.iter().any(|t| t == asked) => asked.to_string(),
            Some(asked) => {
                return Err(AuthError::Forbidden(format!(
                    "{user} may not act for tenant {asked:?}\n"
                )));
            }
        };
        Ok(Identity { user, tenant })
    }

    async fn identify(&self, headers: &HeaderMap) -> Result<(String, Vec<String>), AuthError> {
        let unauthorized = |why: &str| AuthError::Unauthorized(format!("{why}\n"));
        let value = headers
            .get(AUTHORIZATION)
            .ok_or_else(|| {
                unauthorized("authentication required: use basic auth or a bearer token")
            })?
            .to_str()
            .map_err(|_| unauthorized("invalid Authorization header"))?
            .trim();
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let presented = sha256(credentials.as_bytes());
            // Compare against every token in constant time, without
            // stopping at the first match.
            let mut found = None;
            for token in &self.tokens {
                if bool::from(token.sha256.ct_eq(&presented)) && found.is_none() {
                    found = Some(token);
                }
            }
            return found
                .map(|t| (t.name.clone(), t.tenants.clone()))
                .ok_or_else(|| unauthorized("invalid bearer token"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized("unsupported authorization scheme"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| unauthorized("invalid basic auth credentials"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("invalid basic auth credentials"))?;
        let Some(user) = self.users.get(username) else {
            return Err(unauthorized("invalid username or password"));
        };
        let key = sha256(decoded.as_bytes());
        if !self.verified.lock().contains_key(&key) {
            let hash = user.hash.clone();
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false);
            if !ok {
                return Err(unauthorized("invalid username or password"));
            }
            let mut verified = self.verified.lock();
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(key, ());
        }
        Ok((username.to_string(), user.tenants.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TokenConfig, UserConfig};

    fn hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn auth() -> Arc<Auth> {
        Auth::new(&AuthConfig {
            users: vec![
                UserConfig {
                    username: "alice".into(),
                    password_bcrypt: hash("wonderland"),
                    tenants: vec!["a".into(), "shared".into()],
                },
                UserConfig {
                    username: "bob".into(),
                    password_bcrypt: hash("builder"),
                    tenants: vec!["b".into()],
                },
            ],
            tokens: vec![
                TokenConfig {
                    name: Some("ci".into()),
                    token: Some("s3cret".into()),
                    token_sha256: None,
                    tenants: vec!["ci".into()],
                },
                TokenConfig {
                    name: None,
                    token: None,
                    // printf %s hashed | sha256sum
                    token_sha256: Some(hex(&sha256(b"hashed"))),
                    tenants: vec!["h".into()],
                },
            ],
            anonymous_tenant: "fake".into(),
        })
        .unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test]
    async fn anonymous_mode_forces_the_tenant() {
        let auth = Auth::new(&AuthConfig::default()).unwrap();
        assert!(!auth.required());
        let id = auth
            .authenticate(&headers(&[(ORG_ID_HEADER, "other")]))
            .await
            .unwrap();
        assert_eq!(id.tenant, "fake");
    }

    #[tokio::test]
    async fn basic_auth_and_tenants() {
        let auth = auth();
        assert!(auth.required());
        let alice = basic("alice", "wonderland");
        let id = auth
            .authenticate(&headers(&[("authorization", &alice)]))
            .await
            .unwrap();
        assert_eq!((id.user.as_str(), id.tenant.as_str()), ("alice", "a"));
        // Twice: the second check comes from the cache.
        for _ in 0..2 {
            let id = auth
                .authenticate(&headers(&[
                    ("authorization", &alice),
                    (ORG_ID_HEADER, "shared"),
                ]))
                .await
                .unwrap();
            assert_eq!(id.tenant, "shared");
        }
        let err = auth
            .authenticate(&headers(&[("authorization", &alice), (ORG_ID_HEADER, "b")]))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Forbidden(_)), "{err:?}");
        for bad in [
            basic("alice", "wrong"),
            basic("carol", "x"),
            "Basic !!!".to_string(),
            "Digest x".to_string(),
        ] {
            let err = auth
                .authenticate(&headers(&[("authorization", &bad)]))
                .await
                .unwrap_err();
            assert!(matches!(err, AuthError::Unauthorized(_)), "{bad}: {err:?}");
        }
        let err = auth.authenticate(&HeaderMap::new()).await.unwrap_err();
        assert!(matches!(err, AuthError::Unauthorized(_)));
    }

    #[tokio::test]
    async fn bearer_tokens() {
        let auth = auth();
        let id = auth
            .authenticate(&headers(&[("authorization", "Bearer s3cret")]))
            .await
            .unwrap();
        assert_eq!((id.user.as_str(), id.tenant.as_str()), ("ci", "ci"));
        let id = auth
            .authenticate(&headers(&[("authorization", "bearer hashed")]))
            .await
            .unwrap();
        assert_eq!((id.user.as_str(), id.tenant.as_str()), ("token-1", "h"));
        assert!(
            auth.authenticate(&headers(&[("authorization", "Bearer nope")]))
                .await
                .is_err()
        );
    }

    #[test]
    fn config_errors() {
        let user = |hash: &str, tenants: Vec<String>| AuthConfig {
            users: vec![UserConfig {
                username: "u".into(),
                password_bcrypt: hash.into(),
                tenants,
            }],
            ..AuthConfig::default()
        };
        assert!(Auth::new(&user("plain", vec!["a".into()])).is_err());
        assert!(Auth::new(&user("$2b$04$x", vec![])).is_err());
        assert!(Auth::new(&user("$2b$04$x", vec!["a/b".into()])).is_err());
        let token = AuthConfig {
            tokens: vec![TokenConfig {
                name: None,
                token: Some("x".into()),
                token_sha256: Some("00".into()),
                tenants: vec!["a".into()],
            }],
            ..AuthConfig::default()
        };
        assert!(Auth::new(&token).is_err());
    }
}
