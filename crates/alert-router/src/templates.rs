//! Notification templates: Alertmanager's template functions, Lucia's
//! default templates (the names Alertmanager's `default.tmpl` defines,
//! with our own wording), the user's template files, and the data.

use std::path::PathBuf;

use chrono::{FixedOffset, Utc};
use lucia_common::gotemplate::{FuncMap, Templates, Value, humanize_duration};

use crate::model::Time;
use crate::notify::Data;
use crate::timeinterval::Zone;

/// Lucia's default templates, under the names Alertmanager's
/// `default.tmpl` uses so that configurations referring to them work.
pub const DEFAULT_TEMPLATES: &str = r#"
{{ define "__alertmanager" }}Alertmanager{{ end }}
{{ define "__alertmanagerURL" }}{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }}{{ end }}

{{ define "__subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .GroupLabels.SortedPairs.Values | join " " }}{{ if gt (len .CommonLabels) (len .GroupLabels) }} ({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }}){{ end }}{{ end }}
{{ define "__description" }}{{ end }}

{{ define "__text_alert_list" }}{{ range . }}Labels:
{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Annotations:
{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Source: {{ .GeneratorURL }}
{{ end }}{{ end }}

{{ define "__text_alerts" }}{{ if gt (len .Alerts.Firing) 0 }}Firing alerts:
{{ template "__text_alert_list" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}Resolved alerts:
{{ template "__text_alert_list" .Alerts.Resolved }}{{ end }}{{ end }}

{{ define "slack.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "slack.default.username" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "slack.default.fallback" }}{{ template "slack.default.title" . }} | {{ template "slack.default.titlelink" . }}{{ end }}
{{ define "slack.default.callbackid" }}{{ end }}
{{ define "slack.default.pretext" }}{{ end }}
{{ define "slack.default.titlelink" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "slack.default.iconemoji" }}{{ end }}
{{ define "slack.default.iconurl" }}{{ end }}
{{ define "slack.default.text" }}{{ end }}
{{ define "slack.default.footer" }}{{ end }}

{{ define "pagerduty.default.description" }}{{ template "__subject" . }}{{ end }}
{{ define "pagerduty.default.client" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "pagerduty.default.clientURL" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "pagerduty.default.instances" }}{{ template "__text_alert_list" . }}{{ end }}

{{ define "opsgenie.default.message" }}{{ template "__subject" . }}{{ end }}
{{ define "opsgenie.default.description" }}{{ template "__text_alerts" . }}{{ end }}
{{ define "opsgenie.default.source" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "wechat.default.message" }}{{ template "__subject" . }}
{{ template "__text_alerts" . }}AlertmanagerUrl:
{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "wechat.default.to_user" }}{{ end }}
{{ define "wechat.default.to_party" }}{{ end }}
{{ define "wechat.default.to_tag" }}{{ end }}
{{ define "wechat.default.agent_id" }}{{ end }}
{{ define "victorops.default.state_message" }}{{ template "__text_alerts" . }}{{ end }}
{{ define "victorops.default.entity_display_name" }}{{ template "__subject" . }}{{ end }}
{{ define "victorops.default.monitoring_tool" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "pushover.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "pushover.default.message" }}{{ .CommonAnnotations.SortedPairs.Values | join " " }}{{ if gt (len .Alerts.Firing) 0 }}
Firing: {{ .Alerts.Firing | len }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}
Resolved: {{ .Alerts.Resolved | len }}{{ end }}{{ end }}
{{ define "pushover.default.url" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "sns.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "sns.default.message" }}{{ template "__subject" . }}
{{ template "__text_alerts" . }}{{ end }}
{{ define "telegram.default.message" }}{{ template "__subject" . }}
{{ template "__text_alerts" . }}{{ end }}
{{ define "discord.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "discord.default.message" }}{{ template "__text_alerts" . }}{{ end }}
{{ define "webex.default.message" }}{{ template "__subject" . }}
{{ template "__text_alerts" . }}{{ end }}

{{ define "email.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "__email_alert_rows" }}{{ range . }}<tr><td style="padding:8px 12px;border-bottom:1px solid #e5e7eb">
<strong>{{ .Labels.alertname | html }}</strong>{{ with .Annotations.summary }} — {{ . | html }}{{ end }}<br>
{{ range .Labels.SortedPairs }}<code>{{ .Name | html }}={{ .Value | html }}</code> {{ end }}<br>
{{ with .Annotations.description }}{{ . | html }}<br>{{ end }}{{ if .GeneratorURL }}<a href="{{ .GeneratorURL | html }}">Source</a>{{ end }}
</td></tr>
{{ end }}{{ end }}
{{ define "email.default.html" }}<!DOCTYPE html>
<html><head><meta charset="UTF-8"><title>{{ template "__subject" . }}</title></head>
<body style="font-family:sans-serif;background:#f3f4f6;margin:0;padding:16px">
<table style="max-width:640px;margin:0 auto;background:#fff;border-collapse:collapse;width:100%">
<tr><td style="padding:12px;background:{{ if eq .Status "firing" }}#b91c1c{{ else }}#15803d{{ end }};color:#fff;font-size:16px">
{{ .Alerts | len }} alert{{ if gt (len .Alerts) 1 }}s{{ end }} for {{ range .GroupLabels.SortedPairs }}{{ .Name | html }}={{ .Value | html }} {{ end }}</td></tr>
{{ if gt (len .Alerts.Firing) 0 }}<tr><td style="padding:8px 12px"><strong>[{{ .Alerts.Firing | len }}] Firing</strong></td></tr>
{{ template "__email_alert_rows" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}<tr><td style="padding:8px 12px"><strong>[{{ .Alerts.Resolved | len }}] Resolved</strong></td></tr>
{{ template "__email_alert_rows" .Alerts.Resolved }}{{ end }}<tr><td style="padding:12px"><a href="{{ template "__alertmanagerURL" . }}">View in Alertmanager</a></td></tr>
</table></body></html>
{{ end }}
{{ define "email.default.text" }}{{ template "__subject" . }}

{{ template "__text_alerts" . }}
View in Alertmanager: {{ template "__alertmanagerURL" . }}
{{ end }}
"#;

fn time_of(v: &Value) -> Result<chrono::DateTime<FixedOffset>, String> {
    match v {
        Value::Time(t) => Ok(*t),
        other => Err(format!("expected a time, got {other}")),
    }
}

/// Alertmanager's template functions on top of Go's builtins.
pub fn funcs() -> FuncMap {
    let mut f = FuncMap::default();
    let s = |a: &[Value], i: usize| a.get(i).map(Value::as_string).unwrap_or_default();
    f.insert("toUpper", move |a| Ok(Value::Str(s(a, 0).to_uppercase())));
    f.insert("toLower", move |a| Ok(Value::Str(s(a, 0).to_lowercase())));
    f.insert("title", move |a| {
        let mut out = String::new();
        let mut start = true;
        for c in s(a, 0).chars() {
            if start && c.is_alphanumeric() {
                out.extend(c.to_uppercase());
                start = false;
            } else {
                if !c.is_alphanumeric() && c != '\'' {
                    start = true;
                }
                out.push(c);
            }
        }
        Ok(Value::Str(out))
    });
    f.insert("join", move |a| {
        let items: Vec<String> = match a.get(1) {
            Some(Value::List(l)) => l.iter().map(Value::as_string).collect(),
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(format!("join expects a list, got {other}")),
        };
        Ok(Value::Str(items.join(&s(a, 0))))
    });
    f.insert("match", move |a| {
        let re = regex::Regex::new(&s(a, 0)).map_err(|e| e.to_string())?;
        Ok(Value::Bool(re.is_match(&s(a, 1))))
    });
    f.insert("safeHtml", move |a| Ok(Value::Str(s(a, 0))));
    f.insert("reReplaceAll", move |a| {
        let re = regex::Regex::new(&s(a, 0)).map_err(|e| e.to_string())?;
        Ok(Value::Str(
            re.replace_all(&s(a, 2), s(a, 1).as_str()).into_owned(),
        ))
    });
    f.insert("stringSlice", |a| {
        Ok(Value::List(
            a.iter().map(|v| Value::Str(v.as_string())).collect(),
        ))
    });
    f.insert("trimSpace", move |a| {
        Ok(Value::Str(s(a, 0).trim().to_string()))
    });
    f.insert("date", move |a| {
        let t = time_of(a.get(1).unwrap_or(&Value::Nil))?;
        Ok(Value::Str(lucia_common::gotemplate::format_go_layout(
            &s(a, 0),
            &t,
        )))
    });
    f.insert("tz", move |a| {
        let zone = Zone::load(&s(a, 0))?;
        let t = time_of(a.get(1).unwrap_or(&Value::Nil))?;
        let offset =
            FixedOffset::east_opt(zone.offset_at(t.timestamp())).ok_or("invalid offset")?;
        Ok(Value::Time(t.with_timezone(&offset)))
    });
    f.insert("since", |a| {
        let t = time_of(a.first().unwrap_or(&Value::Nil))?;
        let d = Utc::now().signed_duration_since(t);
        Ok(Value::Duration(d.num_nanoseconds().unwrap_or(i64::MAX)))
    });
    f.insert("humanizeDuration", |a| {
        let secs = match a.first() {
            Some(Value::Duration(d)) => *d as f64 / 1e9,
            Some(Value::Int(i)) => *i as f64,
            Some(Value::Float(x)) => *x,
            Some(Value::Str(s)) => s.parse::<f64>().map_err(|e| e.to_string())?,
            other => return Err(format!("humanizeDuration of {other:?}")),
        };
        Ok(Value::Str(humanize_duration(secs)))
    });
    f
}

fn time_value(t: &Time) -> Value {
    Value::Time(t.fixed_offset())
}

/// The template data as values, with Go's field names.
pub fn data_value(d: &Data) -> Value {
    let alerts = d
        .alerts
        .iter()
        .map(|a| {
            Value::Struct(
                [
                    ("Status".to_string(), Value::str(&a.status)),
                    ("Labels".to_string(), Value::string_map(&a.labels)),
                    ("Annotations".to_string(), Value::string_map(&a.annotations)),
                    ("StartsAt".to_string(), time_value(&a.starts_at)),
                    ("EndsAt".to_string(), time_value(&a.ends_at)),
                    ("GeneratorURL".to_string(), Value::str(&a.generator_url)),
                    ("Fingerprint".to_string(), Value::str(&a.fingerprint)),
                ]
                .into(),
            )
        })
        .collect();
    Value::Struct(
        [
            ("Receiver".to_string(), Value::str(&d.receiver)),
            ("Status".to_string(), Value::str(&d.status)),
            ("Alerts".to_string(), Value::List(alerts)),
            (
                "GroupLabels".to_string(),
                Value::string_map(&d.group_labels),
            ),
            (
                "CommonLabels".to_string(),
                Value::string_map(&d.common_labels),
            ),
            (
                "CommonAnnotations".to_string(),
                Value::string_map(&d.common_annotations),
            ),
            ("ExternalURL".to_string(), Value::str(&d.external_url)),
        ]
        .into(),
    )
}

/// The default templates plus the user's files (later files override).
pub fn load(files: &[PathBuf]) -> Result<Templates, String> {
    let mut t = Templates::new(funcs());
    t.add("default.tmpl", DEFAULT_TEMPLATES)
        .map_err(|e| format!("built-in templates: {e}"))?;
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read template file {}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        t.add(&name, &text)
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alert, LabelSet};

    fn data() -> Data {
        let now = Utc::now();
        let alert = |name: &str, instance: &str, resolved: bool| Alert {
            labels: [("alertname", name), ("instance", instance), ("job", "node")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary".to_string(), "disk <full>".to_string())].into(),
            starts_at: now - chrono::Duration::minutes(10),
            ends_at: if resolved {
                now - chrono::Duration::minutes(1)
            } else {
                now + chrono::Duration::minutes(5)
            },
            generator_url: "http://prom/graph".to_string(),
            updated_at: now,
            timeout: false,
        };
        let group: LabelSet = [("alertname".to_string(), "DiskFull".to_string())].into();
        Data::new(
            "ops",
            &group,
            &[alert("DiskFull", "a", false), alert("DiskFull", "b", true)],
            "http://am:9093",
            now,
        )
    }

    #[test]
    fn default_templates_render() {
        let t = load(&[]).unwrap();
        let v = data_value(&data());
        assert_eq!(
            t.render(r#"{{ template "__subject" . }}"#, &v).unwrap(),
            "[FIRING:1] DiskFull (node)"
        );
        assert_eq!(
            t.render(r#"{{ template "slack.default.titlelink" . }}"#, &v)
                .unwrap(),
            "http://am:9093/#/alerts?receiver=ops"
        );
        let list = t
            .render(r#"{{ template "__text_alert_list" .Alerts.Firing }}"#, &v)
            .unwrap();
        assert!(
            list.contains(" - instance = a\n") && list.contains("Source: http://prom/graph"),
            "{list}"
        );
        let html = t
            .render(r#"{{ template "email.default.html" . }}"#, &v)
            .unwrap();
        assert!(
            html.contains("disk &lt;full&gt;") && html.contains("[1] Resolved"),
            "{html}"
        );
        assert_eq!(t.render(r#"{{ .Alerts.Firing | len }}"#, &v).unwrap(), "1");
    }

    #[test]
    fn alertmanager_functions() {
        let t = load(&[]).unwrap();
        let v = data_value(&data());
        let r = |s: &str| t.render(s, &v).unwrap();
        assert_eq!(
            r(r#"{{ "hello world" | title }} {{ "ABC" | toLower }}"#),
            "Hello World abc"
        );
        assert_eq!(r(r#"{{ stringSlice "a" "b" | join "," }}"#), "a,b");
        assert_eq!(r(r#"{{ reReplaceAll "(a)b" "${1}X" "abab" }}"#), "aXaX");
        assert_eq!(r(r#"{{ match "^Disk" .GroupLabels.alertname }}"#), "true");
        assert_eq!(
            r(r#"{{ "  x " | trimSpace }}|{{ 3725 | humanizeDuration }}"#),
            "x|1h 2m 5s"
        );
        assert_eq!(
            r(r#"{{ (index .Alerts 0).StartsAt | date "2006" | len }}"#),
            "4"
        );
        assert_eq!(
            r(r#"{{ (index .Alerts 0).StartsAt | tz "UTC" | date "Z07:00" }}"#),
            "Z"
        );
        assert!(
            r(r#"{{ (index .Alerts 0).StartsAt | since | humanizeDuration }}"#).starts_with("10m")
        );
        assert_eq!(
            r(r#"{{ range .CommonLabels.SortedPairs }}{{ .Name }} {{ end }}"#),
            "alertname job "
        );
    }
}
