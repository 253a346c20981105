use std::collections::BTreeMap;

use chrono::TimeZone;

use super::*;

fn data() -> Value {
    let labels = |pairs: &[(&str, &str)]| {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::str(*v)))
                .collect(),
        )
    };
    let alert = |status: &str, name: &str| {
        Value::Struct(BTreeMap::from([
            ("Status".to_string(), Value::str(status)),
            (
                "Labels".to_string(),
                labels(&[("alertname", name), ("job", "api")]),
            ),
            (
                "Annotations".to_string(),
                labels(&[("summary", "it broke")]),
            ),
        ]))
    };
    Value::Struct(BTreeMap::from([
        ("Status".to_string(), Value::str("firing")),
        (
            "Alerts".to_string(),
            Value::List(vec![
                alert("firing", "A"),
                alert("resolved", "B"),
                alert("firing", "C"),
            ]),
        ),
        (
            "CommonLabels".to_string(),
            labels(&[("job", "api"), ("env", "prod")]),
        ),
        ("GroupLabels".to_string(), labels(&[("job", "api")])),
    ]))
}

fn render(src: &str) -> String {
    Templates::default().render(src, &data()).unwrap()
}

#[test]
fn fields_ranges_and_conditionals() {
    assert_eq!(render("[{{ .Status }}:{{ len .Alerts }}]"), "[firing:3]");
    assert_eq!(
        render("{{ range .Alerts.Firing }}{{ .Labels.alertname }}{{ end }}"),
        "AC"
    );
    assert_eq!(
        render("{{ range $i, $a := .Alerts }}{{ $i }}={{ $a.Status }} {{ end }}"),
        "0=firing 1=resolved 2=firing "
    );
    assert_eq!(
        render("{{ range .CommonLabels.SortedPairs }}{{ .Name }}={{ .Value }};{{ end }}"),
        "env=prod;job=api;"
    );
    assert_eq!(
        render("{{ .CommonLabels.Remove .GroupLabels.Names }}"),
        "map[env:prod]"
    );
    assert_eq!(
        render(
            "{{ if eq .Status \"resolved\" }}R{{ else if gt (len .Alerts.Firing) 1 }}many{{ else }}one{{ end }}"
        ),
        "many"
    );
    assert_eq!(
        render("{{ with .Alerts.Resolved }}{{ len . }} resolved{{ end }}"),
        "1 resolved"
    );
    assert_eq!(render("{{ .CommonLabels.missing }}|"), "|");
    assert_eq!(
        render("{{- \"a\" -}}   {{- \"b\" }} {{/* comment */}}c"),
        "ab c"
    );
    assert_eq!(
        render("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}"),
        "2"
    );
    assert_eq!(
        render(
            "{{ range .Alerts }}{{ if eq .Status \"resolved\" }}{{ break }}{{ end }}{{ .Labels.alertname }}{{ end }}"
        ),
        "A"
    );
    assert_eq!(
        render("{{ index .CommonLabels \"env\" }} {{ index .Alerts 1 | printf \"%.1s\" }}"),
        "prod {"
    );
    assert_eq!(
        render("{{ and 1 0 }} {{ or 0 \"x\" }} {{ not .Status }}"),
        "0 x false"
    );
    assert_eq!(render("{{ (index .Alerts 0).Labels.alertname }}"), "A");
}

#[test]
fn define_and_template() {
    let mut t = Templates::default();
    t.add(
        "lib",
        r#"{{ define "item" }}- {{ .Labels.alertname }}
{{ end }}{{ define "list" }}{{ range . }}{{ template "item" . }}{{ end }}{{ end }}"#,
    )
    .unwrap();
    assert_eq!(
        t.render(r#"{{ template "list" .Alerts.Firing }}"#, &data())
            .unwrap(),
        "- A\n- C\n"
    );
    assert!(t.render("{{ template \"nope\" . }}", &data()).is_err());
    assert!(
        t.render("{{ nosuchfunc 1 }}", &data())
            .unwrap_err()
            .to_string()
            .contains("not defined")
    );
    assert!(t.render("{{ if }}", &data()).is_err());
    assert!(
        t.render("{{ if true }}x", &data())
            .unwrap_err()
            .to_string()
            .contains("end")
    );
    // Recursion stops.
    t.add("loop", r#"{{ define "r" }}{{ template "r" . }}{{ end }}"#)
        .unwrap();
    assert!(t.render(r#"{{ template "r" . }}"#, &data()).is_err());
}

#[test]
fn printf_floats_times_durations() {
    assert_eq!(
        sprintf(
            "%s=%d %.2f %5s|%-3d|%05.1f %q %v%%",
            &[
                Value::str("a"),
                Value::Int(3),
                Value::Float(1.005),
                Value::str("x"),
                Value::Int(7),
                Value::Float(2.25),
                Value::str("q"),
                Value::Bool(true)
            ]
        ),
        "a=3 1.00     x|7  |002.2 \"q\" true%"
    );
    assert_eq!(format_go_float(1e21), "1e+21");
    assert_eq!(format_go_float(0.5), "0.5");
    assert_eq!(format_go_float(100.0), "100");
    let t = chrono::FixedOffset::east_opt(3600)
        .unwrap()
        .with_ymd_and_hms(2024, 3, 5, 14, 7, 9)
        .unwrap();
    assert_eq!(
        format_go_layout("2006-01-02T15:04:05Z07:00 Mon Jan _2 3PM .000", &t),
        "2024-03-05T14:07:09+01:00 Tue Mar  5 2PM .000"
    );
    assert_eq!(format_go_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(format_go_duration(150_000_000), "150ms");
    assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
    assert_eq!(humanize_duration(1.5), "1.5s");
    assert_eq!(humanize_duration(0.02), "20ms");
}
