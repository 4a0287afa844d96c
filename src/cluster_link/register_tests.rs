//! `register` against a real placement behind a proxy that loses the first reply: the node must end
//! up with the one store its first attempt made, not a second (a ghost placement would count).

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntCounterVec;

use super::*;
use crate::security::node_auth::NodeAuthOptions;
use crate::storage::{Engine, EngineOptions};

/// A TCP proxy to `upstream`. Its first connection passes the caller's bytes on and drops every byte
/// of the answers, and is cut once `applied` holds (the request took effect, its reply is lost);
/// later connections pass both ways. Returns its address and the count of connections accepted.
async fn losing_first_reply(
    upstream: String,
    applied: impl Fn() -> bool + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut applied = Some(applied);
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let Some(applied) = applied.take() else {
                tokio::spawn(async move { tokio::io::copy_bidirectional(&mut client, &mut server).await });
                continue;
            };
            tokio::spawn(async move {
                let (mut from_client, _to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let forward = tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
                let drop_replies =
                    tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut tokio::io::sink()).await });
                while !applied() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Cut: every half of both sockets is dropped, so the caller sees the connection close.
                forward.abort();
                drop_replies.abort();
            });
        }
    });
    (addr, accepted)
}

fn node_auth(dir: &std::path::Path) -> Arc<NodeAuth> {
    let engine_options = EngineOptions {
        checksum_failures: prometheus::IntCounter::new("failures", "test").unwrap(),
        map_size: 64 << 20,
        max_readers: 16,
    };
    let options = NodeAuthOptions {
        token_ttl: Duration::from_secs(300),
        password_cost: fekv_placement::auth::PasswordCost::Minimal,
        client_tls: false,
    };
    let logins = IntCounterVec::new(prometheus::Opts::new("logins", "test"), &["outcome"]).unwrap();
    Arc::new(NodeAuth::open(Engine::open(dir, &engine_options).unwrap(), options, logins).unwrap())
}

#[tokio::test]
async fn a_new_store_whose_first_reply_is_lost_registers_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = fekv_placement::PlacementOptions { replicas: 1, ..Default::default() };
    let placement = Arc::new(fekv_placement::Placement::open(&dir.path().join("placement"), options).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    tokio::spawn(fekv_placement::service::serve(listener, placement.clone(), std::future::pending()));
    let watched = placement.clone();
    let (proxy, accepted) = losing_first_reply(upstream, move || !watched.stores().is_empty()).await;

    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let auth = node_auth(&node_dir);
    let link = link(&proxy, None).unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let addrs = ("127.0.0.1:1", "127.0.0.1:2");
    let new_store = StoreIdentity::default();
    let registering = register(&link, &new_store, addrs, &auth, shutdown);
    let identity = tokio::time::timeout(Duration::from_secs(20), registering).await.unwrap().unwrap();

    assert!(accepted.load(Ordering::SeqCst) >= 2, "the first reply was lost and the call retried");
    let stores = placement.stores();
    assert_eq!(stores.len(), 1, "one store, no ghost: {stores:?}");
    assert_eq!(identity.store_id, stores[0].store_id);
    assert!(placement.authenticate_store(identity.store_id, &identity.secret).is_ok(), "the node holds its secret");
}
