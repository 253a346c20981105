//! Prometheus remote write 1.0 receiver: `POST /api/v1/write`, a
//! snappy-compressed (block format) protobuf `WriteRequest`. 204 when every
//! sample is stored; 400 with the reason for bad input or refused samples
//! (the rest of the request is still stored, and the sender does not
//! retry); 500 when storage fails (the sender retries).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lucia_proto::prometheus::WriteRequest;
use prost::Message as _;

use crate::append::{AppendError, SampleAppender, SeriesSamples};
use crate::promql::Labels;

/// Largest decompressed request accepted.
pub const MAX_DECOMPRESSED: usize = 64 << 20;
/// Largest compressed body accepted.
pub const MAX_BODY: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Storage(String),
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        let status = match self {
            WriteError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WriteError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// Decompresses a snappy block-format body whose header claims at most
/// [`MAX_DECOMPRESSED`] bytes (checked before anything is allocated); the
/// error says what was wrong with the body.
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| {
        format!("body is not snappy block-compressed (Content-Encoding: snappy): {e}")
    })?;
    if len > MAX_DECOMPRESSED {
        return Err(format!(
            "decompressed request of {len} bytes is larger than the limit of {MAX_DECOMPRESSED}: send smaller batches"
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy decompression failed: {e}"))
}

/// Decodes a remote-write body into per-series samples.
pub fn decode(body: &[u8]) -> Result<Vec<SeriesSamples>, WriteError> {
    if body.len() > MAX_BODY {
        return Err(WriteError::BadRequest(format!(
            "request body of {} bytes is larger than the limit of {MAX_BODY}: send smaller batches (queue_config.max_samples_per_send)",
            body.len()
        )));
    }
    let raw = decompress(body).map_err(WriteError::BadRequest)?;
    let req = WriteRequest::decode(raw.as_slice())
        .map_err(|e| WriteError::BadRequest(format!("body is not a protobuf WriteRequest: {e}")))?;
    let mut out = Vec::with_capacity(req.timeseries.len());
    for ts in req.timeseries {
        let mut labels = Labels::new();
        for l in ts.labels {
            if let Some(old) = labels.insert(l.name, l.value) {
                let _ = old;
                return Err(WriteError::BadRequest(
                    "series has a duplicate label name".into(),
                ));
            }
        }
        let samples = ts
            .samples
            .into_iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        out.push(SeriesSamples { labels, samples });
    }
    Ok(out)
}

/// Where the handler writes, and how it finds the tenant.
pub struct WriteState<A> {
    pub appender: Arc<A>,
    pub multi_tenant: bool,
}

impl<A> Clone for WriteState<A> {
    fn clone(&self) -> Self {
        Self {
            appender: self.appender.clone(),
            multi_tenant: self.multi_tenant,
        }
    }
}

/// `POST /api/v1/write`.
pub async fn handle<A: SampleAppender>(
    State(state): State<WriteState<A>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, WriteError> {
    let tenant = lucia_common::tenant::tenant_from_headers(&headers, state.multi_tenant)
        .map_err(|e| WriteError::BadRequest(e.to_string()))?;
    // Read at most one byte past the limit, so an oversized body is a 400
    // with the reason rather than a bare 413.
    let body: Bytes = axum::body::to_bytes(body, MAX_BODY + 1).await.map_err(|_| {
        WriteError::BadRequest(format!(
            "request body is larger than the limit of {MAX_BODY} bytes: send smaller batches (queue_config.max_samples_per_send)"
        ))
    })?;
    let batch = decode(&body)?;
    let report = state
        .appender
        .append(&tenant, batch)
        .await
        .map_err(|e| match e {
            AppendError::Invalid(m) => WriteError::BadRequest(m),
            AppendError::Storage(m) => WriteError::Storage(m),
        })?;
    if let Some(first) = report.first_rejection {
        return Err(WriteError::BadRequest(format!(
            "{} of {} samples refused, first: {first}",
            report.rejected,
            report.rejected + report.appended
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The receiver's route.
pub fn router<A: SampleAppender>(state: WriteState<A>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/write", axum::routing::post(handle::<A>))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_proto::prometheus::{Label, Sample, TimeSeries};
    use proptest::prelude::*;

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn decodes_a_write_request_and_refuses_garbage() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
                exemplars: vec![],
            }],
            metadata: vec![],
        };
        let got = decode(&body(&req)).unwrap();
        assert_eq!(got[0].samples, vec![(5, 1.0)]);
        assert!(matches!(
            decode(b"not snappy"),
            Err(WriteError::BadRequest(_))
        ));
        let not_proto = snap::raw::Encoder::new().compress_vec(&[0xff; 20]).unwrap();
        assert!(matches!(decode(&not_proto), Err(WriteError::BadRequest(_))));
        let mut dup = req.clone();
        dup.timeseries[0].labels.push(Label {
            name: "__name__".into(),
            value: "x".into(),
        });
        assert!(decode(&body(&dup)).is_err());
    }

    #[test]
    fn decompression_refuses_an_oversized_claim_before_allocating() {
        // A snappy header claiming 100 MiB, and nothing behind it.
        let mut claim = Vec::new();
        let mut n: u64 = 100 << 20;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        let err = decompress(&claim).unwrap_err();
        assert!(err.contains("larger than the limit"), "{err}");
        assert!(decompress(b"\xff\xff").is_err());
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&data);
        }
    }
}
