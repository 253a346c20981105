//! API errors, mapped once to Prometheus' `errorType` and HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::promql;

/// An error answered with Prometheus' error envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad input: 400 `bad_data`.
    #[error("{0}")]
    BadData(String),
    /// The query failed while running: 422 `execution`.
    #[error("{0}")]
    Execution(String),
    /// The query was canceled: 499 `canceled`.
    #[error("{0}")]
    Canceled(String),
    /// The query ran past its timeout: 503 `timeout`.
    #[error("{0}")]
    Timeout(String),
    /// Storage or server failure: 500 `internal`.
    #[error("{0}")]
    Internal(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// Storage not ready: 503 `unavailable`.
    #[error("{0}")]
    Unavailable(String),
}

/// nginx's "client closed request", which Prometheus uses for canceled
/// queries.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl ApiError {
    /// Prometheus' `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::BadData(_) => "bad_data",
            Self::Execution(_) => "execution",
            Self::Canceled(_) => "canceled",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadData(_) => StatusCode::BAD_REQUEST,
            Self::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Canceled(_) => StatusCode::from_u16(CLIENT_CLOSED_REQUEST)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            Self::Timeout(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    /// Prometheus' `invalid parameter "name": …` (bad_data).
    pub fn invalid_param(name: &str, err: impl std::fmt::Display) -> Self {
        Self::BadData(format!("invalid parameter {name:?}: {err}"))
    }
}

impl From<promql::Error> for ApiError {
    /// Errors of a running query, as Prometheus' `returnAPIError`; parse
    /// and type errors are bad data.
    fn from(err: promql::Error) -> Self {
        match err {
            promql::Error::Parse(m) => Self::BadData(m),
            promql::Error::Execution(m) => Self::Execution(m),
            promql::Error::Timeout(m) => Self::Timeout(m),
            promql::Error::Canceled(m) => Self::Canceled(m),
            promql::Error::Source(m) => Self::Internal(format!("storage: {m}")),
        }
    }
}

impl From<lucia_common::tenant::TenantError> for ApiError {
    fn from(err: lucia_common::tenant::TenantError) -> Self {
        // Prometheus has no tenants; Cortex and Mimir answer a missing org
        // id with 401, which has no errorType: bad_data keeps the envelope.
        Self::BadData(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "errorType": self.error_type(),
            "error": self.to_string(),
        });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_like_prometheus() {
        let cases = [
            (ApiError::BadData(String::new()), 400, "bad_data"),
            (ApiError::Execution(String::new()), 422, "execution"),
            (ApiError::Canceled(String::new()), 499, "canceled"),
            (ApiError::Timeout(String::new()), 503, "timeout"),
            (ApiError::Internal(String::new()), 500, "internal"),
            (ApiError::NotFound(String::new()), 404, "not_found"),
        ];
        for (err, code, typ) in cases {
            assert_eq!(err.status().as_u16(), code);
            assert_eq!(err.error_type(), typ);
        }
        assert_eq!(
            ApiError::invalid_param("step", "x").to_string(),
            "invalid parameter \"step\": x"
        );
    }
}
