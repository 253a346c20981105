//! Grouping, timing, payloads, silences, inhibition, retries, restarts,
//! reloads, tenants and input validation.

use serde_json::json;

use crate::{Receiver, Router, alert, client, config_with_webhook, tempdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_alerts_and_sends_webhook_payload_v4() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), false).await;
    let resp = router
        .post_alerts(json!([
            alert(json!({"alertname": "HighLoad", "instance": "a", "severity": "warning"})),
            alert(json!({"alertname": "HighLoad", "instance": "b", "severity": "warning"})),
        ]))
        .await;
    assert_eq!(resp.status(), 200);

    let n = hook.next().await;
    assert_eq!(n["version"], "4");
    assert_eq!(n["status"], "firing");
    assert_eq!(n["receiver"], "hook");
    assert_eq!(n["groupKey"], r#"{}:{alertname="HighLoad"}"#);
    assert_eq!(n["truncatedAlerts"], 0);
    assert_eq!(n["groupLabels"], json!({"alertname": "HighLoad"}));
    assert_eq!(
        n["commonLabels"],
        json!({"alertname": "HighLoad", "severity": "warning"})
    );
    assert_eq!(n["commonAnnotations"], json!({"summary": "test alert"}));
    assert_eq!(n["externalURL"], router.url);
    let alerts = n["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(alerts[0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(alerts[0]["generatorURL"], "http://prometheus/graph");
    assert_eq!(alerts[0]["fingerprint"].as_str().unwrap().len(), 16);

    // The API shows the alerts and their group.
    let listed = router.get_json("/api/v2/alerts", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["receivers"], json!([{"name": "hook"}]));
    assert_eq!(listed[0]["status"]["state"], "active");
    let groups = router.get_json("/api/v2/alerts/groups", None).await;
    assert_eq!(groups[0]["labels"], json!({"alertname": "HighLoad"}));
    assert_eq!(groups[0]["alerts"].as_array().unwrap().len(), 2);

    // Resolving one alert notifies at the next group interval.
    let now = chrono::Utc::now().to_rfc3339();
    let mut resolved =
        alert(json!({"alertname": "HighLoad", "instance": "b", "severity": "warning"}));
    resolved["endsAt"] = json!(now);
    router.post_alerts(json!([resolved])).await;
    let n = hook.next().await;
    assert_eq!(n["status"], "firing");
    let statuses: Vec<&str> = n["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["firing", "resolved"]);
    assert_ne!(n["alerts"][1]["endsAt"], "0001-01-01T00:00:00Z");

    // A new alert in another group gets its own notification.
    router
        .post_alerts(json!([alert(json!({"alertname": "DiskFull"}))]))
        .await;
    let n = hook.next().await;
    assert_eq!(n["groupKey"], r#"{}:{alertname="DiskFull"}"#);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_and_inhibition_suppress_notifications() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let inhibit = r#"
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: [cluster]
"#;
    let router = Router::start(
        dir.path(),
        &config_with_webhook(&hook.url, "", inhibit),
        false,
    )
    .await;
    let sid = router.add_silence(None, "alertname", "Silenced").await;
    router
        .post_alerts(json!([
            alert(json!({"alertname": "Silenced"})),
            alert(json!({"alertname": "Source", "severity": "critical", "cluster": "c1"})),
            alert(json!({"alertname": "Target", "severity": "warning", "cluster": "c1"})),
            alert(json!({"alertname": "Other", "severity": "warning", "cluster": "c2"})),
        ]))
        .await;
    // The four groups flush together; only Source and Other get through.
    let mut got = [hook.next().await, hook.next().await];
    got.sort_by_key(|n| n["groupKey"].as_str().unwrap().to_string());
    assert_eq!(got[0]["groupKey"], r#"{}:{alertname="Other"}"#);
    assert_eq!(got[1]["groupKey"], r#"{}:{alertname="Source"}"#);

    let alerts = router.get_json("/api/v2/alerts", None).await;
    let by_name = |n: &str| {
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("Silenced")["status"]["state"], "suppressed");
    assert_eq!(by_name("Silenced")["status"]["silencedBy"], json!([sid]));
    assert_eq!(by_name("Target")["status"]["state"], "suppressed");
    assert_eq!(
        by_name("Target")["status"]["inhibitedBy"],
        json!([by_name("Source")["fingerprint"]])
    );
    let active_only = router
        .get_json("/api/v2/alerts?silenced=false&inhibited=false", None)
        .await;
    assert_eq!(active_only.as_array().unwrap().len(), 2);
    let filtered = router
        .get_json(
            "/api/v2/alerts?filter=cluster%3D%22c1%22&filter=severity%3D~%22crit.*%22",
            None,
        )
        .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    // Expiring the silence lets the next flush notify.
    let resp = client()
        .delete(format!("{}/api/v2/silence/{sid}", router.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let n = hook.next().await;
    assert_eq!(n["groupKey"], r#"{}:{alertname="Silenced"}"#);
    let s = router
        .get_json(&format!("/api/v2/silence/{sid}"), None)
        .await;
    assert_eq!(s["status"]["state"], "expired");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_receiver_answers() {
    let dir = tempdir();
    let mut hook = Receiver::start(2).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Flappy"}))]))
        .await;
    let n = hook.next().await;
    assert_eq!(n["alerts"][0]["labels"]["alertname"], "Flappy");
    assert!(hook.requests.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    let metrics = client()
        .get(format!("http://{}/metrics", router.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"alertmanager_notification_requests_failed_total{integration="webhook"} 2"#
        ),
        "{metrics}"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_silences_and_does_not_renotify() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let config = config_with_webhook(&hook.url, "", "");
    let router = Router::start(dir.path(), &config, false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Persistent"}))]))
        .await;
    let n = hook.next().await;
    assert_eq!(n["groupKey"], r#"{}:{alertname="Persistent"}"#);
    let sid = router.add_silence(None, "alertname", "Muted").await;
    router.stop().await;

    let router = Router::start(dir.path(), &config, false).await;
    let silences = router.get_json("/api/v2/silences", None).await;
    assert_eq!(silences[0]["id"], sid);
    assert_eq!(silences[0]["status"]["state"], "active");
    // Prometheus re-sends the firing alert; the notification log knows it
    // was sent. A sentinel alert posted afterwards, in a group that flushes
    // later, shows when the first group has had its chance.
    router
        .post_alerts(json!([alert(json!({"alertname": "Persistent"}))]))
        .await;
    tokio::task::yield_now().await;
    let groups = router.get_json("/api/v2/alerts/groups", None).await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    router
        .post_alerts(json!([alert(json!({"alertname": "Sentinel"}))]))
        .await;
    let n = hook.next().await;
    assert_eq!(n["groupKey"], r#"{}:{alertname="Sentinel"}"#);
    let early = hook.pending();
    assert!(early.is_empty(), "re-notified after restart: {early:?}");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_routes_and_keeps_state() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), false).await;
    let sid = router.add_silence(None, "alertname", "Kept").await;
    let receivers = router.get_json("/api/v2/receivers", None).await;
    assert_eq!(receivers, json!([{"name": "hook"}]));
    // A bad file is refused and the old config stays.
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: nope\n",
    )
    .unwrap();
    let resp = router.reload().await;
    assert_eq!(resp.status(), 500);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("alertmanager.yml") && body.contains("nope"),
        "{body}"
    );
    let extra = "- name: second\n  webhook_configs:\n  - url: ".to_string() + &hook.url;
    let routes = "  routes:\n  - matchers: [team=\"b\"]\n    receiver: second";
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        config_with_webhook(&hook.url, routes, &extra),
    )
    .unwrap();
    let resp = router.reload().await;
    assert_eq!(resp.status(), 200);
    let receivers = router.get_json("/api/v2/receivers", None).await;
    assert_eq!(receivers, json!([{"name": "hook"}, {"name": "second"}]));
    router
        .post_alerts(json!([alert(json!({"alertname": "X", "team": "b"}))]))
        .await;
    let n = hook.next().await;
    assert_eq!(n["receiver"], "second");
    assert_eq!(n["groupKey"], r#"{}/{team="b"}:{alertname="X"}"#);
    let silences = router.get_json("/api/v2/silences", None).await;
    assert_eq!(silences[0]["id"], sid);
    let status = router.get_json("/api/v2/status", None).await;
    assert!(
        status["config"]["original"]
            .as_str()
            .unwrap()
            .contains("second")
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_kept_apart() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), true).await;
    let resp = router
        .post_alerts(json!([alert(json!({"alertname": "NoTenant"}))]))
        .await;
    assert_eq!(resp.status(), 401);
    router
        .post_alerts_as(Some("team-a"), json!([alert(json!({"alertname": "A"}))]))
        .await;
    router
        .post_alerts_as(Some("team-b"), json!([alert(json!({"alertname": "B"}))]))
        .await;
    let sid = router.add_silence(Some("team-a"), "alertname", "A").await;
    let a = router.get_json("/api/v2/alerts", Some("team-a")).await;
    let b = router.get_json("/api/v2/alerts", Some("team-b")).await;
    assert_eq!(a.as_array().unwrap().len(), 1);
    assert_eq!(a[0]["labels"]["alertname"], "A");
    assert_eq!(a[0]["status"]["silencedBy"], json!([sid]));
    assert_eq!(b[0]["labels"]["alertname"], "B");
    assert_eq!(b[0]["status"]["state"], "active");
    assert_eq!(
        router.get_json("/api/v2/silences", Some("team-b")).await,
        json!([])
    );
    let resp = client()
        .get(format!("{}/api/v2/silence/{sid}", router.url))
        .header("X-Scope-OrgID", "team-b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Only team-b's alert is notified (team-a's is silenced).
    let n = hook.next().await;
    assert_eq!(n["alerts"][0]["labels"]["alertname"], "B");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_with_a_reason() {
    let dir = tempdir();
    let hook = Receiver::start(0).await;
    let router = Router::start_with(
        dir.path(),
        &config_with_webhook(&hook.url, "", ""),
        false,
        Some("/am"),
    )
    .await;
    let post = |path: &str, body: &'static str| {
        client()
            .post(format!("{}{path}", router.url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &'static str, &str)> = vec![
        ("/api/v2/alerts", "{bad", "parsing alerts body"),
        (
            "/api/v2/alerts",
            r#"[{"labels":{}}]"#,
            "at least one label pair required",
        ),
        (
            "/api/v2/alerts",
            r#"[{"labels":{"a":"b"},"startsAt":"yesterday"}]"#,
            "invalid time",
        ),
        (
            "/api/v2/alerts",
            r#"[{"labels":{"a":"b"},"startsAt":"2024-01-02T00:00:00Z","endsAt":"2024-01-01T00:00:00Z"}]"#,
            "start time must be before end time",
        ),
        (
            "/api/v2/alerts",
            r#"[{"labels":{"a-b":"c"}}]"#,
            "invalid name",
        ),
        (
            "/api/v2/silences",
            r#"{"matchers":[],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2020-01-01T00:00:00Z","createdBy":"a","comment":"b"}"#,
            "at least 1",
        ),
        (
            "/api/v2/silences",
            r#"{"matchers":[{"name":"a","value":"","isRegex":false}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2999-01-01T00:00:00Z","createdBy":"a","comment":"b"}"#,
            "must not match the empty string",
        ),
        (
            "/api/v2/silences",
            r#"{"matchers":[{"name":"a","value":"b","isRegex":false}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2020-01-02T00:00:00Z","createdBy":"a","comment":"b"}"#,
            "end time can't be in the past",
        ),
        (
            "/api/v2/silences",
            r#"{"matchers":[{"name":"a","value":"(","isRegex":true}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2999-01-02T00:00:00Z","createdBy":"a","comment":"b"}"#,
            "regular expression",
        ),
    ];
    for (path, body, reason) in cases {
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {body}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(reason), "{path} {body}: {text}");
    }
    let resp = client()
        .get(format!("{}/api/v2/alerts?filter=%7Bbad", router.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client()
        .get(format!("{}/api/v2/silence/not-a-uuid", router.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The route prefix applies to every route.
    let resp = client()
        .get(format!("{}/-/healthy", router.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(format!("http://{}/api/v2/status", router.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_pagerduty_payloads() {
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let config = format!(
        r#"
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
receivers:
- name: chat
  slack_configs:
  - api_url: {url}
    channel: '#alerts'
    fields:
    - title: Team
      value: '{{{{ .CommonLabels.team }}}}'
  pagerduty_configs:
  - routing_key: secret-key
    url: {url}
    severity: '{{{{ .CommonLabels.severity }}}}'
"#,
        url = hook.url
    );
    let router = Router::start(dir.path(), &config, false).await;
    let status = router.get_json("/api/v2/status", None).await;
    let original = status["config"]["original"].as_str().unwrap();
    assert!(
        original.contains("routing_key: <secret>") && !original.contains("secret-key"),
        "{original}"
    );
    router
        .post_alerts(json!([alert(
            json!({"alertname": "Down", "team": "db", "severity": "critical"})
        )]))
        .await;
    let (a, b) = (hook.next().await, hook.next().await);
    let (slack, pd) = if a.get("attachments").is_some() {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(slack["channel"], "#alerts");
    assert_eq!(slack["username"], "Alertmanager");
    let att = &slack["attachments"][0];
    assert_eq!(att["title"], "[FIRING:1] Down (critical db)");
    assert_eq!(att["color"], "danger");
    assert_eq!(
        att["fields"][0],
        json!({"title": "Team", "value": "db", "short": false})
    );
    assert!(
        att["title_link"]
            .as_str()
            .unwrap()
            .ends_with("/#/alerts?receiver=chat")
    );
    assert_eq!(pd["routing_key"], "secret-key");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["summary"], "[FIRING:1] Down (critical db)");
    assert_eq!(pd["payload"]["custom_details"]["num_firing"], "1");
    assert_eq!(pd["dedup_key"].as_str().unwrap().len(), 32);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_smtp() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<String>, String)>();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        wr.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        let mut commands = Vec::new();
        let mut data = String::new();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    wr.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                }
                continue;
            }
            commands.push(line.trim().to_string());
            let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                "EHLO" => b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n",
                "AUTH" => b"235 ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go\r\n"
                }
                "QUIT" => {
                    wr.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 ok\r\n",
            };
            wr.write_all(reply).await.unwrap();
        }
        tx.send((commands, data)).unwrap();
    });
    let dir = tempdir();
    let config = format!(
        r#"
global:
  smtp_smarthost: {smtp_addr}
  smtp_from: lucia@example.org
  smtp_require_tls: false
route:
  receiver: mail
  group_wait: 1s
receivers:
- name: mail
  email_configs:
  - to: 'Ops <ops@example.org>'
    auth_username: user
    auth_password: pass
    text: 'plain {{{{ .Status }}}}'
"#
    );
    let router = Router::start(dir.path(), &config, false).await;
    router
        .post_alerts(json!([alert(json!({"alertname": "Mail"}))]))
        .await;
    let (commands, data) = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        commands.contains(&"MAIL FROM:<lucia@example.org>".to_string()),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"RCPT TO:<ops@example.org>".to_string()),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.starts_with("AUTH PLAIN ")),
        "{commands:?}"
    );
    assert!(
        data.contains("Subject: [FIRING:1]  (Mail)") || data.contains("Subject: [FIRING:1]"),
        "{data}"
    );
    assert!(data.contains("To: Ops <ops@example.org>"), "{data}");
    assert!(data.contains("Content-Type: text/html"), "{data}");
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    router.stop().await;
}
