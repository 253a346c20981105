//! The Consul client against the fake Consul, service registration of a
//! process, and the Consul-backed ring.

use std::time::Duration;

use lucia_common::consul::{
    ConsulClient, ConsulConfig, ConsulError, HttpCheck, ServiceEntry, ServiceRegistration,
};
use lucia_common::duration::ConfigDuration;
use lucia_common::ring::{
    self, InstanceState, KvStore, Lifecycler, Ring, RingConfig, RingSnapshot,
};
use lucia_common::server::{Readiness, Role, RoleContext};
use lucia_common::{Shutdown, metrics::Metrics};
use lucia_tests::fake_consul::FakeConsul;
use lucia_tests::ready_server::ReadyServer;
use tokio::time::Instant;

/// Generous: the machine is small and shared.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Short check intervals so that tests see state changes quickly.
fn fast(mut config: ConsulConfig) -> ConsulConfig {
    config.check_interval = ConfigDuration::from_millis(100);
    config.check_timeout = ConfigDuration::from_secs(2);
    config.deregister_critical_service_after = ConfigDuration::from_secs(2);
    config.wait = ConfigDuration::from_secs(5);
    config
}

fn registration(name: &str, server: &ReadyServer, config: &ConsulConfig) -> ServiceRegistration {
    let addr = server.addr();
    ServiceRegistration {
        id: format!("{name}-{}-{}", addr.ip(), addr.port()),
        name: name.to_string(),
        tags: vec!["metrics".into(), "test".into()],
        address: addr.ip().to_string(),
        port: addr.port(),
        meta: [("version".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        check: Some(HttpCheck::new(server.url(), config)),
    }
}

/// Follows `name`'s health with blocking queries until `pred` holds.
async fn wait_health(
    client: &ConsulClient,
    name: &str,
    what: &str,
    pred: impl Fn(&[ServiceEntry]) -> bool,
) -> Vec<ServiceEntry> {
    let deadline = Instant::now() + TIMEOUT;
    let mut index = 0;
    loop {
        let answer = tokio::time::timeout_at(
            deadline,
            client.health_service(name, false, index, Some(Duration::from_secs(5))),
        )
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("health query failed");
        if pred(&answer.value) {
            return answer.value;
        }
        index = answer.index;
    }
}

fn passing(entries: &[ServiceEntry], id: &str) -> Option<bool> {
    entries
        .iter()
        .find(|e| e.service.id == id)
        .map(ServiceEntry::is_passing)
}

#[tokio::test]
async fn client_registers_and_filters_passing() {
    let fake = FakeConsul::start().await;
    let config = fast(fake.config());
    let client = ConsulClient::new(&config).unwrap();
    let good = ReadyServer::start().await;
    let bad = ReadyServer::start().await;
    bad.set_ready(false);
    let good_reg = registration("svc", &good, &config);
    let bad_reg = registration("svc", &bad, &config);
    client.register_service(&good_reg).await.unwrap();
    client.register_service(&bad_reg).await.unwrap();

    let entries = wait_health(&client, "svc", "good passing, bad critical", |e| {
        passing(e, &good_reg.id) == Some(true) && passing(e, &bad_reg.id) == Some(false)
    })
    .await;
    let good_entry = entries
        .iter()
        .find(|e| e.service.id == good_reg.id)
        .unwrap();
    assert_eq!(good_entry.addr(), good.addr().to_string());
    assert_eq!(good_entry.service.tags, vec!["metrics", "test"]);
    assert_eq!(
        good_entry.service.meta.get("version").map(String::as_str),
        Some("1")
    );
    assert!(good_entry.checks.len() >= 2, "node and service checks");

    let only_passing = client.health_service("svc", true, 0, None).await.unwrap();
    let ids: Vec<_> = only_passing
        .value
        .iter()
        .map(|e| e.service.id.clone())
        .collect();
    assert_eq!(ids, vec![good_reg.id.clone()]);
    assert!(only_passing.index > 0);

    client.deregister_service(&good_reg.id).await.unwrap();
    let rest = client.health_service("svc", false, 0, None).await.unwrap();
    assert_eq!(rest.value.len(), 1);
    assert_eq!(rest.value[0].service.id, bad_reg.id);
    let err = client.deregister_service("no-such-id").await.unwrap_err();
    assert!(
        matches!(err, ConsulError::Status { status: 404, .. }),
        "{err}"
    );
    fake.stop().await;
}

#[tokio::test]
async fn blocking_queries_wait_and_wake_on_change() {
    let fake = FakeConsul::start().await;
    let client = ConsulClient::new(&fake.config()).unwrap();
    let first = client
        .health_service("blocked", false, 0, None)
        .await
        .unwrap();
    assert!(first.value.is_empty());

    // Nothing changes: the query answers after `wait` with the same index.
    let started = Instant::now();
    let idle = client
        .health_service(
            "blocked",
            false,
            first.index,
            Some(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "did not block"
    );
    assert_eq!(idle.index, first.index);

    // A change to another service does not answer it, a change to it does.
    let waiter = {
        let client = client.clone();
        let index = first.index;
        tokio::spawn(async move {
            client
                .health_service("blocked", false, index, Some(Duration::from_secs(25)))
                .await
        })
    };
    let reg = |name: &str| ServiceRegistration {
        id: name.to_string(),
        name: name.to_string(),
        tags: vec![],
        address: "127.0.0.1".into(),
        port: 9,
        meta: Default::default(),
        check: None,
    };
    client.register_service(&reg("other")).await.unwrap();
    client.register_service(&reg("blocked")).await.unwrap();
    let woken = tokio::time::timeout(TIMEOUT, waiter)
        .await
        .expect("blocking query never answered")
        .unwrap()
        .unwrap();
    assert!(woken.index > first.index);
    assert_eq!(woken.value.len(), 1, "woken by its own service's change");
    assert!(woken.value[0].is_passing(), "no check means passing");
    fake.stop().await;
}

#[tokio::test]
async fn kv_cas_recurse_and_delete() {
    let fake = FakeConsul::start().await;
    let client = ConsulClient::new(&fake.config()).unwrap();
    let missing = client.kv_get("a/one", 0, None).await.unwrap();
    assert_eq!(missing.value, None);
    assert!(missing.index > 0, "404 still carries an index");

    assert!(
        client.kv_put("a/one", b"v1", Some(0)).await.unwrap(),
        "create"
    );
    assert!(
        !client.kv_put("a/one", b"v2", Some(0)).await.unwrap(),
        "cas=0 is create-only"
    );
    let one = client
        .kv_get("a/one", 0, None)
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(one.value, b"v1");
    assert_eq!(one.create_index, one.modify_index);
    assert!(
        !client
            .kv_put("a/one", b"v2", Some(one.modify_index + 100))
            .await
            .unwrap()
    );
    assert!(
        client
            .kv_put("a/one", b"v2", Some(one.modify_index))
            .await
            .unwrap()
    );
    let two = client
        .kv_get("a/one", 0, None)
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(two.value, b"v2");
    assert!(two.modify_index > one.modify_index);
    assert_eq!(two.create_index, one.create_index);

    // Binary and empty values survive the base64 round trip.
    client.kv_put("a/two", &[0, 255, 10], None).await.unwrap();
    client.kv_put("a/sub/three", b"", None).await.unwrap();
    client.kv_put("b/other", b"x", None).await.unwrap();
    let listed = client.kv_list("a/", 0, None).await.unwrap();
    let keys: Vec<_> = listed.value.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["a/one", "a/sub/three", "a/two"]);
    assert_eq!(listed.value[1].value, b"");
    assert_eq!(listed.value[2].value, vec![0, 255, 10]);

    // A blocking list of a/ wakes when a key under it is deleted.
    let waiter = {
        let client = client.clone();
        let index = listed.index;
        tokio::spawn(async move {
            client
                .kv_list("a/", index, Some(Duration::from_secs(25)))
                .await
        })
    };
    client.kv_delete("a/two").await.unwrap();
    let after = tokio::time::timeout(TIMEOUT, waiter)
        .await
        .expect("blocking list never answered")
        .unwrap()
        .unwrap();
    assert!(after.index > listed.index);
    let keys: Vec<_> = after.value.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["a/one", "a/sub/three"]);
    assert_eq!(client.kv_get("a/two", 0, None).await.unwrap().value, None);
    client.kv_delete("a/two").await.unwrap();
    assert_eq!(fake.kv_keys(), vec!["a/one", "a/sub/three", "b/other"]);
    fake.stop().await;
}

#[tokio::test]
async fn failing_check_turns_critical_then_service_is_deregistered() {
    let fake = FakeConsul::start().await;
    let config = fast(fake.config());
    let client = ConsulClient::new(&config).unwrap();
    let server = ReadyServer::start().await;
    let reg = registration("flaky", &server, &config);
    client.register_service(&reg).await.unwrap();
    wait_health(&client, "flaky", "passing", |e| {
        passing(e, &reg.id) == Some(true)
    })
    .await;

    server.set_ready(false);
    wait_health(&client, "flaky", "critical", |e| {
        passing(e, &reg.id) == Some(false)
    })
    .await;
    let critical_at = Instant::now();
    assert_eq!(fake.check_status(&reg.id).as_deref(), Some("critical"));
    wait_health(&client, "flaky", "deregistration", |e| e.is_empty()).await;
    let waited = critical_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "deregistered after {waited:?}, before DeregisterCriticalServiceAfter (2s)"
    );
    assert!(fake.service_ids().is_empty());
    server.stop().await;
    fake.stop().await;
}

#[tokio::test]
async fn acl_token_is_required_when_configured() {
    let fake = FakeConsul::start_with_token("s3cret").await;
    let mut config = fake.config();
    assert_eq!(config.acl_token.as_deref(), Some("s3cret"));
    let client = ConsulClient::new(&config).unwrap();
    assert!(client.kv_put("k", b"v", None).await.unwrap());
    config.acl_token = None;
    let anonymous = ConsulClient::new(&config).unwrap();
    let err = anonymous.kv_get("k", 0, None).await.unwrap_err();
    assert!(matches!(err, ConsulError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("consul.acl_token"), "{err}");
    fake.stop().await;
}

#[tokio::test]
async fn server_registers_every_role_and_deregisters_on_shutdown() {
    let fake = FakeConsul::start().await;
    let consul = fast(fake.config());
    let (listener, advertise_addr) = lucia_common::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let ctx = RoleContext {
        advertise_addr,
        metrics: Metrics::new(),
        readiness: Readiness::default(),
        shutdown: shutdown.clone(),
        data_dir: std::env::temp_dir(),
        multi_tenant: false,
        consul: Some(consul.clone()),
    };
    let roles = vec![
        Role::new("alert_router", axum::Router::new(), async {}),
        Role::new("querier", axum::Router::new(), async {}),
    ];
    let serving =
        tokio::spawn(async move { lucia_common::server::serve_roles(listener, &ctx, roles).await });
    let host_port = format!("{}-{}", advertise_addr.ip(), advertise_addr.port());
    let router_id = format!("lucia-alert-router-{host_port}");
    let querier_id = format!("lucia-querier-{host_port}");
    assert!(
        fake.wait_for_services(TIMEOUT, |ids| ids.len() == 2).await,
        "roles not registered: {:?}",
        fake.service_ids()
    );
    assert_eq!(fake.service_ids(), vec![router_id.clone(), querier_id]);
    assert_eq!(
        fake.service_tags(&router_id).unwrap(),
        vec!["metrics", "alert-router"]
    );
    // The check hits the process's own /ready, which passes.
    let client = ConsulClient::new(&consul).unwrap();
    wait_health(&client, "lucia-alert-router", "role passing", |e| {
        passing(e, &router_id) == Some(true)
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    assert!(
        fake.service_ids().is_empty(),
        "not deregistered: {:?}",
        fake.service_ids()
    );
    fake.stop().await;
}

async fn wait_ring(ring: &mut Ring, what: &str, pred: impl Fn(&RingSnapshot) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if pred(&ring.snapshot()) {
            return;
        }
        match tokio::time::timeout_at(deadline, ring.changed()).await {
            Ok(true) => {}
            Ok(false) => panic!("ring watch ended while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}; ring: {:?}",
                ring.snapshot().instances()
            ),
        }
    }
}

fn state_of(snapshot: &RingSnapshot, id: &str) -> Option<InstanceState> {
    snapshot.instance(id).map(|i| i.state)
}

#[tokio::test]
async fn consul_ring_follows_health_and_deregistration() {
    let fake = FakeConsul::start().await;
    let consul = fast(fake.config());
    let client = ConsulClient::new(&consul).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ring_config = RingConfig::default();
    ring_config.kvstore.store = KvStore::Consul;
    ring_config.num_tokens = 16;
    ring_config.heartbeat_period = ConfigDuration::from_millis(200);

    let mut servers = Vec::new();
    let mut members = Vec::new();
    for n in 1..=2 {
        let server = ReadyServer::start().await;
        client
            .register_service(&registration("lucia-ingester", &server, &consul))
            .await
            .unwrap();
        let mut member = Lifecycler::join(
            &ring_config,
            "ingester",
            format!("ingester-{n}"),
            server.addr().to_string(),
            &dir.path().join(format!("tokens-{n}.json")),
            Some(&consul),
        )
        .await
        .unwrap();
        member.set_state(InstanceState::Active).await.unwrap();
        servers.push(server);
        members.push(member);
    }
    assert_eq!(
        fake.kv_keys(),
        vec![
            "lucia/ring/ingester/ingester-1",
            "lucia/ring/ingester/ingester-2"
        ]
    );

    let shutdown = Shutdown::new();
    let mut ring = ring::watch(&ring_config, "ingester", Some(&consul), shutdown.clone())
        .await
        .unwrap();
    wait_ring(&mut ring, "both ACTIVE", |s| {
        state_of(s, "ingester-1") == Some(InstanceState::Active)
            && state_of(s, "ingester-2") == Some(InstanceState::Active)
    })
    .await;
    let snapshot = ring.snapshot();
    assert_eq!(snapshot.instance("ingester-1").unwrap().tokens.len(), 16);
    assert_eq!(snapshot.replicas(0, 2).len(), 2);
    let status = ring::ring_status(&snapshot);
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    assert_eq!(status["members"][1]["state"], "ACTIVE");

    // ingester-2's process dies: its check fails, then Consul reaps it.
    let dead = servers.pop().unwrap();
    dead.stop().await;
    wait_ring(&mut ring, "ingester-2 UNHEALTHY", |s| {
        state_of(s, "ingester-2") == Some(InstanceState::Unhealthy)
    })
    .await;
    assert_eq!(
        state_of(&ring.snapshot(), "ingester-1"),
        Some(InstanceState::Active)
    );
    assert_eq!(
        ring.snapshot().replicas(0, 2).len(),
        1,
        "only healthy replicas"
    );
    wait_ring(&mut ring, "ingester-2 gone", |s| {
        s.instance("ingester-2").is_none()
    })
    .await;
    assert_eq!(
        state_of(&ring.snapshot(), "ingester-1"),
        Some(InstanceState::Active)
    );

    // A clean leave removes the entry from the KV store and the ring.
    let first = members.remove(0);
    first.leave().await.unwrap();
    assert_eq!(fake.kv_keys(), vec!["lucia/ring/ingester/ingester-2"]);
    wait_ring(&mut ring, "ingester-1 left", |s| {
        s.instance("ingester-1").is_none()
    })
    .await;

    shutdown.cancel();
    let ended = tokio::time::timeout(TIMEOUT, async { while ring.changed().await {} }).await;
    assert!(ended.is_ok(), "ring watch did not stop on shutdown");
    drop(members);
    fake.stop().await;
}
