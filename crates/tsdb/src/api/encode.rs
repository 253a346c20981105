//! JSON encoding of query results exactly as Prometheus writes them:
//! timestamps as float seconds with millisecond precision, values as
//! strings (`"+Inf"`, `"NaN"`, Go's `'f'` format, `'e'` below 1e-6 and from
//! 1e21 on), label sets as objects sorted by name.

use std::fmt::Write as _;

use crate::promql::{Labels, Series, Value};

/// A sample value as Prometheus' JSON codec writes it (without quotes):
/// `strconv.FormatFloat(v, 'f', -1, 64)`, or `'e'` when the magnitude is
/// below 1e-6 or at least 1e21.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v == f64::INFINITY {
        return "+Inf".into();
    }
    if v == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        format_exponent(v)
    } else {
        // Rust's Display is the shortest representation that round-trips,
        // never in exponent form: Go's 'f' with precision -1.
        format!("{v}")
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: shortest digits, an exponent
/// with a sign and at least two digits (`1e+21`, `1.5e-07`).
pub fn format_exponent(v: f64) -> String {
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let pad = if digits.len() < 2 { "0" } else { "" };
    format!("{mantissa}e{sign}{pad}{digits}")
}

/// A millisecond timestamp as Prometheus writes it: seconds, then `.` and
/// exactly three digits when there is a fraction (`1.5` is `1.500`).
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    let abs = t_ms.unsigned_abs();
    if t_ms < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// A label set as a JSON object, names in order.
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_str(out, v);
    }
    out.push('}');
}

/// `[ts, "value"]`.
pub fn write_point(out: &mut String, t_ms: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t_ms);
    out.push_str(",\"");
    write_value(out, v);
    out.push_str("\"]");
}

/// [`format_value`] written straight into `out`: a range query's result
/// has a value per point, and a `String` for each was an eighth of the
/// time of a 200-series query.
fn write_value(out: &mut String, v: f64) {
    let abs = v.abs();
    if v.is_finite() && (abs == 0.0 || (1e-6..1e21).contains(&abs)) {
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&format_value(v));
    }
}

fn write_series(out: &mut String, s: &Series) {
    out.push_str("{\"metric\":");
    write_labels(out, &s.labels);
    out.push_str(",\"values\":[");
    for (i, (t, v)) in s.points.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_point(out, *t, *v);
    }
    out.push_str("]}");
}

/// The `data` of a query response: `{"resultType":…,"result":…}`. Vector
/// samples and scalars carry the evaluation time `t_ms`.
pub fn query_data(value: &Value, t_ms: i64) -> String {
    let mut out = String::with_capacity(256);
    match value {
        Value::Scalar(f) => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(&mut out, t_ms, *f);
        }
        Value::String(s) => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            write_timestamp(&mut out, t_ms);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(v) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.push_str(",\"value\":");
                write_point(&mut out, t_ms, s.f);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(m) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_series(&mut out, s);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::Sample;

    #[test]
    fn values_like_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1.5e300), "1.5e+300");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(format_value(1e-7), "1e-07");
        assert_eq!(format_value(-2.5e-10), "-2.5e-10");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(123456.789), "123456.789");
        assert_eq!(format_value(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(format_value(5e-324), "5e-324");
        for v in [
            1.0,
            -0.0,
            0.1,
            1e20,
            1e21,
            1e-6,
            9.99e-7,
            1e-7,
            -2.5e-10,
            123456.789,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            -1e300,
        ] {
            let mut written = String::new();
            write_value(&mut written, v);
            assert_eq!(written, format_value(v), "{v:e}");
        }
    }

    #[test]
    fn timestamps_like_prometheus() {
        let ts = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(1500), "1.500");
        assert_eq!(ts(1005), "1.005");
        assert_eq!(ts(2000), "2");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(-1500), "-1.500");
    }

    #[test]
    fn result_shapes() {
        let labels: Labels = [
            ("__name__".into(), "up".into()),
            ("job".into(), "a\"b".into()),
        ]
        .into();
        let v = Value::Vector(vec![Sample {
            labels: labels.clone(),
            f: 1.0,
            h: None,
        }]);
        assert_eq!(
            query_data(&v, 1500),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1.500,"1"]}]}"#
        );
        assert_eq!(
            query_data(&Value::Scalar(2.0), 3000),
            r#"{"resultType":"scalar","result":[3,"2"]}"#
        );
        assert_eq!(
            query_data(&Value::String("x".into()), 3000),
            r#"{"resultType":"string","result":[3,"x"]}"#
        );
        let m = Value::Matrix(vec![Series {
            labels,
            points: vec![(1000, 1.0), (2000, f64::NAN)],
            histograms: Vec::new(),
        }]);
        assert_eq!(
            query_data(&m, 0),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1,"1"],[2,"NaN"]]}]}"#
        );
    }
}
