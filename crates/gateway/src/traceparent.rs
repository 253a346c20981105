//! W3C trace context (`traceparent`) towards the backends.
//!
//! The request's span takes an incoming `traceparent` as its parent; when
//! OpenTelemetry export is on, the backends get the gateway span's context,
//! otherwise the incoming header unchanged, or a new one so that every
//! backend request of one client request shares a trace id.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const HEADER: &str = "traceparent";

/// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else or
/// all-zero ids.
pub fn parse(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

pub fn format(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// Makes `incoming` the parent of `span` (for exported traces).
pub fn adopt(span: &tracing::Span, incoming: Option<&SpanContext>) {
    if let Some(parent) = incoming {
        let cx = opentelemetry::Context::new().with_remote_span_context(parent.clone());
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` to send to backends for a request handled in `span`.
pub fn outgoing(span: &tracing::Span, incoming: Option<&SpanContext>) -> String {
    let cx = span.context();
    let own = cx.span().span_context().clone();
    if own.is_valid() {
        return format(&own);
    }
    match incoming {
        Some(parent) => format(parent),
        None => {
            let trace = TraceId::from_bytes(rand::random::<[u8; 16]>());
            let span_id = SpanId::from_bytes(rand::random::<[u8; 8]>());
            format(&SpanContext::new(
                trace,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse(header).unwrap();
        assert_eq!(format(&cx), header);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        // Without an OpenTelemetry layer: the incoming header, or a new one.
        let span = tracing::Span::none();
        assert_eq!(outgoing(&span, Some(&cx)), header);
        let fresh = outgoing(&span, None);
        assert!(parse(&fresh).is_some(), "{fresh}");
    }
}
