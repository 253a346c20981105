//! `parse_query`: the parsed expression as JSON, in the shape of
//! Prometheus' `translateAST` (web/api/v1/translate_ast.go), which its UI's
//! tree view reads.
//!
//! Gaps (what `promql-parser`'s AST does not carry): duration expressions
//! (`rangeExpr`, `offsetExpr`, `stepExpr` are always null), `anchored` and
//! `smoothed` are always false.

use std::time::{Duration, UNIX_EPOCH};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality};
use serde_json::{Value, json};

use super::encode::format_value;

fn millis(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

/// `timestamp` (ms of a fixed `@`) and `startOrEnd`.
fn at_fields(at: &Option<AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => millis(&d),
                Err(e) => -millis(&e.duration()),
            };
            (json!(ms), Value::Null)
        }
    }
}

fn matchers(vs: &promql_parser::parser::VectorSelector) -> Value {
    let mut out = Vec::new();
    let has_name_matcher = vs
        .matchers
        .matchers
        .iter()
        .any(|m| m.name == crate::promql::METRIC_NAME);
    if let (Some(name), false) = (&vs.name, has_name_matcher) {
        out.push(json!({"name": crate::promql::METRIC_NAME, "value": name, "type": "="}));
    }
    for m in &vs.matchers.matchers {
        out.push(json!({"name": m.name, "value": m.value, "type": m.op.to_string()}));
    }
    Value::Array(out)
}

fn labels_list(l: &promql_parser::label::Labels) -> Value {
    json!(l.labels)
}

fn type_name(t: &ValueType) -> &'static str {
    match t {
        ValueType::Vector => "vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "matrix",
        ValueType::String => "string",
    }
}

/// The JSON tree of `expr`.
pub fn translate(expr: &Expr) -> Value {
    match expr {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                None => (json!([]), false),
                Some(LabelModifier::Include(l)) => (labels_list(l), false),
                Some(LabelModifier::Exclude(l)) => (labels_list(l), true),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": translate(&a.expr),
                "param": a.param.as_deref().map(translate).unwrap_or(Value::Null),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => {
            let both_vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let op = b.op.to_string();
            let set_op = matches!(op.as_str(), "and" | "or" | "unless");
            let matching = match &b.modifier {
                Some(m) if both_vectors || m.matching.is_some() => {
                    let (card, include) = match &m.card {
                        VectorMatchCardinality::OneToOne => ("one-to-one", json!([])),
                        VectorMatchCardinality::ManyToOne(l) => ("many-to-one", labels_list(l)),
                        VectorMatchCardinality::OneToMany(l) => ("one-to-many", labels_list(l)),
                        VectorMatchCardinality::ManyToMany => ("many-to-many", json!([])),
                    };
                    let card = if set_op { "many-to-many" } else { card };
                    let (labels, on) = match &m.matching {
                        None => (json!([]), false),
                        Some(LabelModifier::Include(l)) => (labels_list(l), true),
                        Some(LabelModifier::Exclude(l)) => (labels_list(l), false),
                    };
                    json!({
                        "card": card,
                        "labels": labels,
                        "on": on,
                        "include": include,
                        "fillValues": {"lhs": m.fill_values.lhs, "rhs": m.fill_values.rhs},
                    })
                }
                _ if both_vectors => json!({
                    "card": if set_op { "many-to-many" } else { "one-to-one" },
                    "labels": [],
                    "on": false,
                    "include": [],
                    "fillValues": {"lhs": null, "rhs": null},
                }),
                _ => Value::Null,
            };
            json!({
                "type": "binaryExpr",
                "op": op,
                "lhs": translate(&b.lhs),
                "rhs": translate(&b.rhs),
                "matching": matching,
                "bool": b.return_bool(),
            })
        }
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(type_name).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": type_name(&c.func.return_type),
            },
            "args": c.args.args.iter().map(|a| translate(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let (timestamp, start_or_end) = at_fields(&m.vs.at);
            json!({
                "type": "matrixSelector",
                "name": m.vs.name.clone().unwrap_or_default(),
                "range": millis(&m.range),
                "rangeExpr": null,
                "offset": offset_ms(&m.vs.offset),
                "offsetExpr": null,
                "matchers": matchers(&m.vs),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
                "anchored": false,
                "smoothed": false,
            })
        }
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at_fields(&s.at);
            json!({
                "type": "subquery",
                "expr": translate(&s.expr),
                "range": millis(&s.range),
                "rangeExpr": null,
                "offset": offset_ms(&s.offset),
                "offsetExpr": null,
                "step": s.step.as_ref().map(millis).unwrap_or(0),
                "stepExpr": null,
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::NumberLiteral(n) => json!({
            "type": "numberLiteral",
            "val": if n.val.is_finite() { format!("{}", n.val) } else { format_value(n.val) },
        }),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": translate(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": translate(&u.expr)}),
        Expr::VectorSelector(vs) => {
            let (timestamp, start_or_end) = at_fields(&vs.at);
            json!({
                "type": "vectorSelector",
                "name": vs.name.clone().unwrap_or_default(),
                "offset": offset_ms(&vs.offset),
                "offsetExpr": null,
                "matchers": matchers(vs),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
                "anchored": false,
                "smoothed": false,
            })
        }
        Expr::Extension(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> Value {
        translate(&promql_parser::parser::parse(q).expect("parse"))
    }

    #[test]
    fn shapes_like_prometheus() {
        let t = tree("sum by (job) (rate(up{job=\"a\"}[5m] offset 1m))");
        assert_eq!(t["type"], "aggregation");
        assert_eq!(t["op"], "sum");
        assert_eq!(t["grouping"], json!(["job"]));
        assert_eq!(t["without"], false);
        let call = &t["expr"];
        assert_eq!(call["type"], "call");
        assert_eq!(call["func"]["name"], "rate");
        assert_eq!(call["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(call["func"]["returnType"], "vector");
        let ms = &call["args"][0];
        assert_eq!(ms["type"], "matrixSelector");
        assert_eq!(ms["range"], 300_000);
        assert_eq!(ms["offset"], 60_000);
        assert_eq!(ms["name"], "up");
        assert_eq!(
            ms["matchers"],
            json!([
                {"name": "__name__", "value": "up", "type": "="},
                {"name": "job", "value": "a", "type": "="}
            ])
        );
        let b = tree("a / on(x) group_left(y) b");
        assert_eq!(b["matching"]["card"], "many-to-one");
        assert_eq!(b["matching"]["on"], true);
        assert_eq!(b["matching"]["labels"], json!(["x"]));
        assert_eq!(b["matching"]["include"], json!(["y"]));
        let s = tree("1 + 2");
        assert_eq!(s["matching"], Value::Null);
        assert_eq!(s["lhs"], json!({"type": "numberLiteral", "val": "1"}));
        let sq = tree("max_over_time(up[1h:5m] @ end())");
        assert_eq!(sq["args"][0]["type"], "subquery");
        assert_eq!(sq["args"][0]["step"], 300_000);
        assert_eq!(sq["args"][0]["startOrEnd"], "end");
    }
}
