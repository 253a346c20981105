//! Real clients from Debian's packages: amtool, Alertmanager (for
//! fingerprints) and Prometheus sending alerts. Each test skips with a
//! notice when its binary is missing.

use std::process::Command;

use serde_json::json;

use crate::{
    Alertmanager, Receiver, Router, alert, binary, config_with_webhook, free_port, tempdir,
};

fn amtool(args: &[&str]) -> (bool, String) {
    let Some(bin) = binary(&["amtool"]) else {
        return (false, String::new());
    };
    let out = Command::new(bin).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn amtool_async(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        amtool(&refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_alerts_silences_and_config() {
    if binary(&["amtool"]).is_none() {
        return;
    }
    let dir = tempdir();
    let hook = Receiver::start(0).await;
    let routes = "  routes:\n  - matchers: ['severity=\"critical\"']\n    receiver: pager\n    continue: true";
    let extra = format!(
        "- name: pager\n  webhook_configs:\n  - url: {}\n    send_resolved: false",
        hook.url
    );
    let config = config_with_webhook(&hook.url, routes, &extra);
    let router = Router::start(dir.path(), &config, false).await;
    let url = format!("--alertmanager.url={}", router.url);
    let a = |args: &[&str]| {
        let mut v = vec![url.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        amtool_async(v)
    };

    // check-config accepts the file the router runs with.
    let file = dir.path().join("alertmanager.yml");
    let (ok, out) = amtool_async(vec!["check-config".into(), file.display().to_string()]).await;
    assert!(ok, "{out}");

    let (ok, out) = a(&[
        "alert",
        "add",
        "alertname=DiskFull",
        "severity=critical",
        "--annotation=summary=disk",
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = a(&["alert", "query"]).await;
    assert!(
        ok && out.contains("DiskFull") && out.contains("disk"),
        "{out}"
    );
    assert!(!out.contains("Warning"), "version warning: {out}");
    let (ok, out) = a(&["alert", "query", "-o", "json", "severity=critical"]).await;
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed[0]["receivers"], json!([{"name": "pager"}]));

    let (ok, sid) = a(&[
        "silence",
        "add",
        "alertname=DiskFull",
        "-c",
        "maintenance",
        "-a",
        "ops",
        "-d",
        "1h",
    ])
    .await;
    assert!(ok, "{sid}");
    let sid = sid.trim().to_string();
    assert_eq!(sid.len(), 36, "{sid}");
    let (ok, out) = a(&["silence", "query"]).await;
    assert!(
        ok && out.contains(&sid) && out.contains("maintenance"),
        "{out}"
    );
    let (ok, out) = a(&["silence", "query", "-q", "alertname=DiskFull"]).await;
    assert!(ok && out.trim() == sid, "{out}");
    let (ok, out) = a(&["alert", "query", "--silenced"]).await;
    assert!(ok && out.contains("DiskFull"), "{out}");
    let (ok, out) = a(&["silence", "expire", &sid]).await;
    assert!(ok, "{out}");
    let (ok, out) = a(&["silence", "query"]).await;
    assert!(ok && !out.contains(&sid), "{out}");
    let (ok, out) = a(&["silence", "query", "--expired"]).await;
    assert!(ok && out.contains(&sid), "{out}");

    let (ok, out) = a(&["config", "show"]).await;
    assert!(ok && out.contains("receiver: hook"), "{out}");
    let (ok, out) = a(&["config", "routes", "show"]).await;
    assert!(ok && out.contains("pager"), "{out}");
    let (ok, out) = a(&["config", "routes", "test", "severity=critical"]).await;
    assert!(ok && out.contains("pager"), "{out}");
    let (ok, out) = a(&[
        "config",
        "routes",
        "test",
        "--verify.receivers=hook",
        "severity=info",
    ])
    .await;
    assert!(ok && out.contains("hook"), "{out}");
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_match_a_real_alertmanager() {
    let dir = tempdir();
    let Some(am) = Alertmanager::start(
        dir.path(),
        "route:\n  receiver: default\nreceivers:\n- name: default\n",
    )
    .await
    else {
        return;
    };
    let am_url = am.url.clone();
    let c = crate::client();
    let alerts = json!([
        alert(json!({"alertname": "A", "instance": "host:9100", "job": "node"})),
        alert(json!({"alertname": "B", "msg": "ünïcödé \"quoted\"\n"})),
    ]);
    let resp = c
        .post(format!("{am_url}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let theirs: serde_json::Value = c
        .get(format!("{am_url}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop(am);

    let hook = Receiver::start(0).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), false).await;
    router.post_alerts(alerts).await;
    let ours = router.get_json("/api/v2/alerts", None).await;
    let fps = |v: &serde_json::Value| {
        let mut f: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["fingerprint"].as_str().unwrap().to_string())
            .collect();
        f.sort();
        f
    };
    assert_eq!(fps(&ours), fps(&theirs));
    assert_eq!(fps(&ours).len(), 2);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sends_alerts() {
    let Some(prom) = binary(&["prometheus"]) else {
        return;
    };
    let dir = tempdir();
    let mut hook = Receiver::start(0).await;
    let router = Router::start(dir.path(), &config_with_webhook(&hook.url, "", ""), false).await;
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: AlwaysFiring\n    expr: vector(1)\n    labels:\n      severity: page\n    annotations:\n      summary: from prometheus\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [{}]\nalerting:\n  alertmanagers:\n  - api_version: v2\n    static_configs:\n    - targets: ['{}']\n",
            dir.path().join("rules.yml").display(),
            router.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(prom)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prom").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // The first alert can go out before the Alertmanager list is
        // discovered; resend quickly instead of after a minute.
        .arg("--rules.alert.resend-delay=1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let n = hook.next().await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(n["groupKey"], r#"{}:{alertname="AlwaysFiring"}"#);
    assert_eq!(n["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(n["alerts"][0]["annotations"]["summary"], "from prometheus");
    assert!(
        n["alerts"][0]["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/graph")
    );
    router.stop().await;
}
