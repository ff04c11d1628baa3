//! The semantics every [`SharedState`] backend keeps, checked on [`MemoryState`] and, when
//! `redis-server` is installed, on [`RedisState`] against a real server.
#![allow(clippy::disallowed_methods)]

use super::*;

fn port(uuid: &str, service_uri: &str, name: &str) -> SitePort {
    SitePort {
        uuid: uuid.into(),
        service_uri: service_uri.into(),
        name: name.into(),
    }
}

fn instance(id: &str, port: u16) -> Instance {
    Instance::new(id, SocketAddr::from(([127, 0, 0, 1], port))).unwrap()
}

const UUID: &str = "56 4d 12 34 56 78 9a bc-de f0 11 22 33 44 55 66";

async fn semantics(state: &dyn SharedState) {
    let (a, b) = (instance("a", 1001), instance("b", 1002));
    let console = port(UUID, "vSPC.py?port=console", "web-1");
    let com2 = port(UUID, "vSPC.py?port=com2", "web-1");
    let lease = Duration::from_millis(400);

    // Handover records are claimed once.
    let owner: SocketAddr = "127.0.0.1:1".parse().unwrap();
    state
        .offer("d", owner, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(state.claim("d").await.unwrap(), Some(owner));
    assert_eq!(state.claim("d").await.unwrap(), None);

    // A run never announced has no lease to renew.
    assert!(!state.renew(&a, lease).await.unwrap());
    // A port nobody holds is held by the first instance; the other sees who holds it.
    let held = state
        .hold(&a, &[console.clone(), com2.clone()], lease)
        .await
        .unwrap();
    assert_eq!(held, [Holding::Held, Holding::Held]);
    let seen = state
        .hold(&b, std::slice::from_ref(&console), lease)
        .await
        .unwrap();
    assert_eq!(seen, [Holding::HeldBy("a".into())]);

    // Located by name, name/label, every UUID spelling; numbers are local.
    let by = |selector: &'static str| async move {
        let mut found: Vec<String> = state
            .locate(selector)
            .await
            .unwrap()
            .into_iter()
            .map(|vm| {
                format!(
                    "{}@{}={}",
                    vm.port.service_uri, vm.instance.id, vm.instance.link
                )
            })
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        by("web-1").await,
        [
            "vSPC.py?port=com2@a=127.0.0.1:1001",
            "vSPC.py?port=console@a=127.0.0.1:1001"
        ]
    );
    assert_eq!(
        by("web-1/com2").await,
        ["vSPC.py?port=com2@a=127.0.0.1:1001"]
    );
    assert_eq!(
        by("564d123456789abcdef0112233445566/console").await.len(),
        1
    );
    assert_eq!(by("564D1234-5678-9ABC-DEF0-112233445566").await.len(), 2);
    assert!(by("1").await.is_empty());
    assert!(by("web-2").await.is_empty());
    assert_eq!(state.site().await.unwrap().len(), 2);

    // Renewed (one command, however many ports), the lease outlives its first term.
    for _ in 0..3 {
        tokio::time::sleep(lease / 2).await;
        assert!(state.renew(&a, lease).await.unwrap());
        assert_eq!(by("web-1").await.len(), 2);
    }
    // Released, a port is free for b.
    state
        .release(&b, std::slice::from_ref(&console))
        .await
        .unwrap();
    assert_eq!(
        by("web-1/console").await.len(),
        1,
        "b cannot release a's port"
    );
    state
        .release(&a, std::slice::from_ref(&console))
        .await
        .unwrap();
    assert_eq!(
        state
            .hold(&b, std::slice::from_ref(&console), lease)
            .await
            .unwrap(),
        [Holding::Held]
    );
    assert_eq!(
        by("web-1/console").await,
        ["vSPC.py?port=console@b=127.0.0.1:1002"]
    );

    // Both stop renewing (died, or lost the store): their ports lapse with their leases.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(by("web-1").await.is_empty());
    assert!(state.site().await.unwrap().is_empty());
    // b comes back first and takes com2 (its VM reconnected there); a, back, learns its lease
    // lapsed, and claims nothing b holds; its console is its own again.
    let one = |p: &SitePort| std::slice::from_ref(p).to_vec();
    assert_eq!(
        state.hold(&b, &one(&com2), lease).await.unwrap(),
        [Holding::Held]
    );
    assert!(!state.renew(&a, lease).await.unwrap());
    assert_eq!(
        state
            .hold(&a, &[com2.clone(), console.clone()], lease)
            .await
            .unwrap(),
        [Holding::HeldBy("b".into()), Holding::Held]
    );
    assert!(state.renew(&a, lease).await.unwrap());

    // a restarts under the same name before its lease lapses: the new run is not the old
    // one, so the old run's ports are free for whoever the VMs reconnect to.
    let a_again = instance("a", 1001);
    assert!(!state.renew(&a_again, lease).await.unwrap());
    assert!(by("web-1/console").await.is_empty());
    assert_eq!(
        state.hold(&b, &one(&console), lease).await.unwrap(),
        [Holding::Held]
    );
    assert!(
        !state.renew(&a, lease).await.unwrap(),
        "the old run is over"
    );

    // One token for the site.
    let token = state.site_token().await.unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(state.site_token().await.unwrap(), token);
}

#[tokio::test]
async fn memory_state_keeps_the_semantics() {
    semantics(&MemoryState::default()).await;
}

#[tokio::test]
async fn redis_state_keeps_the_semantics() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let Ok(mut child) = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let state = RedisState::new(&format!("redis://127.0.0.1:{port}/0"), "test").unwrap();
    let started = Instant::now();
    while state.site_token().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    semantics(&state).await;
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn digests_hide_the_key() {
    let d = digest(b"\x44\xda\x87\xf1\x3c\xe6\x4d\xab");
    assert_eq!(d.len(), 64);
    assert!(!d.contains("3ce64dab"));
}

#[test]
fn selectors_parse_as_the_registry_reads_them() {
    let name = |who: &str| Who::Name(who.into());
    assert_eq!(SiteSelector::parse("7"), None);
    assert_eq!(SiteSelector::parse(""), None);
    assert_eq!(
        SiteSelector::parse("web-1/com2"),
        Some(SiteSelector {
            who: name("web-1"),
            label: Some("com2".into())
        })
    );
    assert_eq!(
        SiteSelector::parse(UUID).unwrap().who,
        Who::Uuid("564d123456789abcdef0112233445566".into())
    );
    // A 32-hex-digit name with other letters stays a name.
    assert_eq!(
        SiteSelector::parse("deadbeefdeadbeefdeadbeefdeadbeef-vm")
            .unwrap()
            .who,
        name("deadbeefdeadbeefdeadbeefdeadbeef-vm")
    );
}
