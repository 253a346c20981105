//! `lucia rules test` / `lucia rules check` side by side with promtool
//! (skipped with a notice when promtool is absent), and the ruler in
//! `lucia all` writing recorded series and ALERTS into its own tsdb and
//! sending alerts to its own alert-router.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{Lucia, free_port, installed, prom_query};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/process/rules")
        .join(name)
}

fn run(program: &str, args: &[&str], dir: &Path) -> Option<Output> {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
}

#[test]
fn rule_unit_tests_agree_with_promtool() {
    let dir = testdata("");
    let promtool = installed("promtool");
    // (file, expected verdict)
    for (file, passes) in [
        ("pass.yml", true),
        ("fail.yml", false),
        ("extra.yml", true),
        ("extra_fail.yml", false),
    ] {
        let lucia =
            run(env!("CARGO_BIN_EXE_lucia"), &["rules", "test", file], &dir).expect("run lucia");
        let stdout = String::from_utf8_lossy(&lucia.stdout);
        let stderr = String::from_utf8_lossy(&lucia.stderr);
        assert_eq!(lucia.status.success(), passes, "{file}: {stdout}{stderr}");
        assert!(
            stdout.starts_with(&format!("Unit Testing:  {file}\n")),
            "{stdout}"
        );
        if passes {
            assert!(stdout.contains("  SUCCESS"), "{stdout}");
        } else {
            assert!(stderr.contains("  FAILED:"), "{stderr}");
        }
        if promtool {
            let p = run("promtool", &["test", "rules", file], &dir).expect("run promtool");
            assert_eq!(
                p.status.success(),
                lucia.status.success(),
                "{file}: promtool says {}{}",
                String::from_utf8_lossy(&p.stdout),
                String::from_utf8_lossy(&p.stderr)
            );
        }
    }
}

#[test]
fn rules_check_like_promtool() {
    let dir = testdata("");
    let ok = run(
        env!("CARGO_BIN_EXE_lucia"),
        &["rules", "check", "rules.yml"],
        &dir,
    )
    .expect("run");
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "Checking rules.yml\n  SUCCESS: 3 rules found\n\n"
    );
    let bad = run(
        env!("CARGO_BIN_EXE_lucia"),
        &["rules", "check", "bad_rules.yml"],
        &dir,
    )
    .expect("run");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains(
            "bad_rules.yml:4: group \"bad\", rule 1, \"not a name\": invalid recording rule name"
        ),
        "{err}"
    );
    assert!(
        err.contains("rule 2, \"Broken\": could not parse expression"),
        "{err}"
    );
    if let Some(p) = run("promtool", &["check", "rules", "bad_rules.yml"], &dir) {
        assert!(!p.status.success());
    }
}

async fn query(addr: &str, q: &str) -> serde_json::Value {
    prom_query(&lucia_common::http_client::client(), addr, q, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lucia_all_records_series_and_alerts_in_its_tsdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: self\n    interval: 1s\n    rules:\n      - record: lucia:one\n        expr: vector(1)\n      - alert: AlwaysFiring\n        expr: lucia:one > 0\n        labels:\n          severity: none\n",
    )
    .expect("write rules");
    let config = format!("ruler:\n  rule_files: [{}]\n", rules.display());
    let port = free_port();
    let lucia = Lucia::start(dir.path(), port, &config).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rec = query(&lucia.addr, "lucia:one").await;
        let alerts = query(
            &lucia.addr,
            "ALERTS{alertname=\"AlwaysFiring\",alertstate=\"firing\"}",
        )
        .await;
        let found = |v: &serde_json::Value| {
            v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        };
        if found(&rec) && found(&alerts) {
            assert_eq!(alerts["data"]["result"][0]["metric"]["severity"], "none");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recorded series / ALERTS: {rec} {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rules_api: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{}/api/v1/rules", lucia.addr))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    assert_eq!(
        rules_api["data"]["groups"][0]["rules"][0]["health"], "ok",
        "{rules_api}"
    );
    let alerts_api: serde_json::Value = lucia_common::http_client::client()
        .get(format!("http://{}/api/v1/alerts", lucia.addr))
        .send()
        .await
        .expect("alerts")
        .json()
        .await
        .expect("json");
    assert_eq!(
        alerts_api["data"]["alerts"][0]["labels"]["alertname"],
        "AlwaysFiring"
    );
}
