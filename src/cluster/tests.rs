//! The fencing of cluster writes against a real `redis-server` (private,
//! ephemeral port, no persistence), and what key names give away.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use super::fenced::{Fenced, Written};
use super::lease::acquire;
use super::stored::read;
use super::Cluster;
use crate::config::{ClusterConfig, FeedConfig};
use crate::feed::{Feed, FeedKey};
use crate::metrics::Metrics;
use crate::upstream::Validators;

struct Server(std::process::Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server, or `None` (saying why) without one outside CI.
fn server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(Server(c, port)),
        Err(e) => {
            let why = format!("cluster tests need redis-server (.ci/run installs it): {e}");
            assert!(std::env::var("CI").ok().as_deref() != Some("true"), "{why}");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

fn feed(authorization: Option<&str>) -> Feed {
    let key = FeedKey::new(
        0,
        "q=1".into(),
        authorization.map(|a| HeaderValue::from_str(a).expect("header")),
        None,
    );
    Feed::new(key, Arc::new(FeedConfig::new("jobs", "/api/jobs")), 16)
}

async fn connected(port: u16) -> Arc<Cluster> {
    let cfg = ClusterConfig::new(&format!("redis://127.0.0.1:{port}/"), b"0123456789abcdef0");
    let c = Cluster::new(&cfg, 16, Arc::new(Metrics::with_cluster())).expect("cluster");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !c.check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c
}

#[tokio::test]
async fn a_stale_leaders_write_is_refused_by_the_script() {
    let Some(server) = server() else { return };
    let cluster = connected(server.1).await;
    let f = feed(None);
    let keys = cluster.names.keys(&f);
    let a = acquire(&cluster, &keys)
        .await
        .expect("acquire")
        .expect("free lease");
    assert!(
        acquire(&cluster, &keys).await.expect("acquire").is_none(),
        "one holder at a time"
    );
    let leader = |token: &str| Fenced {
        cluster: cluster.clone(),
        keys: keys.clone(),
        token: token.to_owned(),
        epoch: None,
        seq: 0,
        stop: Default::default(),
    };
    let none = Validators::default();
    let body = Bytes::from_static(b"[]");
    let old = leader(&a);
    old.write("e1", 0, true, written(&body, &none, &[]))
        .await
        .expect("first write");
    old.write(
        "e1",
        1,
        false,
        written(&body, &none, &[(2, Bytes::from_static(b"two"))]),
    )
    .await
    .expect("second write");

    // `a` pauses past its lease (its key expires: deleted here), and
    // another replica takes the feed with a greater fencing token.
    let mut conn = cluster.conn().expect("conn");
    let _: i64 = redis::cmd("DEL")
        .arg(&keys.lease)
        .query_async(&mut conn)
        .await
        .expect("del");
    let b = acquire(&cluster, &keys)
        .await
        .expect("acquire")
        .expect("free lease");
    let n = |t: &str| t.split(':').next().and_then(|n| n.parse::<u64>().ok());
    assert!(n(&b) > n(&a), "fencing tokens grow: {a} then {b}");

    // The ex-leader wakes up and writes what it polled meanwhile: refused.
    let late = old
        .write(
            "e1",
            2,
            false,
            written(&body, &none, &[(3, Bytes::from_static(b"late"))]),
        )
        .await;
    assert!(late.is_err(), "{late:?}");
    // The new leader with a sequence it did not read: refused too.
    let new = leader(&b);
    let moved = new
        .write(
            "e1",
            1,
            false,
            written(&body, &none, &[(2, Bytes::from_static(b"dup"))]),
        )
        .await;
    assert!(moved.is_err(), "{moved:?}");
    new.write(
        "e1",
        2,
        false,
        written(&body, &none, &[(3, Bytes::from_static(b"three"))]),
    )
    .await
    .expect("the holder's write");

    let stored = read(&cluster, &keys, &None, 0)
        .await
        .expect("read")
        .expect("state");
    assert_eq!(stored.seq, 3);
    let events = stored.full.expect("full").events;
    assert_eq!(
        events,
        vec![
            (2, Bytes::from_static(b"two")),
            (3, Bytes::from_static(b"three"))
        ],
        "no late write, no reused id"
    );

    // The upstream's status is fenced the same way.
    let stale = Bytes::from_static(b"stale");
    let refused = old.write_status(true, &stale).await;
    assert!(refused.is_err(), "{refused:?}");
    new.write_status(true, &stale)
        .await
        .expect("the holder's status");
    let told = read(&cluster, &keys, &None, 0)
        .await
        .expect("read")
        .and_then(|s| s.full)
        .expect("state")
        .status;
    assert_eq!(told.stale, Some(stale), "stale, with the leader's bytes");
}

fn written<'a>(
    body: &'a Bytes,
    validators: &'a Validators,
    events: &'a [(u64, Bytes)],
) -> Written<'a> {
    Written {
        body,
        validators,
        events,
        end: None,
    }
}

#[test]
fn key_names_carry_no_credential_and_depend_on_the_secret() {
    let names = super::keys::Namer::new("pollcast:", b"0123456789abcdef0");
    let alice = names.keys(&feed(Some("Bearer alice-token")));
    let bob = names.keys(&feed(Some("Bearer bob-token")));
    for k in [&alice.lease, &alice.state, &alice.stream, &alice.fence] {
        assert!(
            !k.contains("alice") && !k.contains("q=1") && !k.contains("jobs"),
            "{k}"
        );
        assert!(k.starts_with("pollcast:{"), "{k}");
    }
    assert_ne!(alice.hash, bob.hash, "one feed per user");
    let other = super::keys::Namer::new("pollcast:", b"another-secret-key");
    assert_ne!(
        other.keys(&feed(Some("Bearer alice-token"))).hash,
        alice.hash,
        "hashes are keyed"
    );
}

/// The item list of `body` as a poll makes it.
fn list_of(f: &Feed, body: &'static [u8]) -> Arc<crate::feed::extract::ItemList> {
    crate::feed::update::prepare(&f.def, &f.render, None, Bytes::from_static(body))
        .expect("body")
        .expect("update")
        .into_parts()
        .1
}

#[test]
fn an_id_a_moment_ahead_of_this_replica_waits_for_it_then_replays() {
    use crate::feed::{Applied, Out};
    use std::collections::VecDeque;
    let f = feed(None);
    let at = |seq, events: Vec<(u64, Bytes)>, reset| Applied {
        epoch: "e1".into(),
        seq,
        base: 1,
        list: list_of(&f, b"[{\"id\":1}]"),
        events,
        reset,
    };
    f.apply(at(1, Vec::new(), true));
    let mut out = VecDeque::new();
    // Told seq 3 by another replica; this one is at 1.
    let mut c = f.cursor(Some("e1:3"));
    f.pull(&mut c, &mut out);
    assert!(out.is_empty(), "nothing until this replica caught up");
    f.apply(at(2, vec![(2, Bytes::from_static(b"two"))], false));
    f.pull(&mut c, &mut out);
    assert!(out.is_empty(), "still behind");
    f.apply(at(3, vec![(3, Bytes::from_static(b"three"))], false));
    f.pull(&mut c, &mut out);
    assert!(out.is_empty(), "caught up: nothing the client has not seen");
    assert_eq!(c.position(), Some(3), "resumed, not resynced");

    // An id that stays ahead gets a snapshot once this replica compared
    // its state with the cluster's twice; one far ahead gets it at once.
    let mut d = f.cursor(Some("e1:5"));
    f.pull(&mut d, &mut out);
    f.synced();
    f.pull(&mut d, &mut out);
    assert!(out.is_empty(), "one comparison may predate the client");
    f.synced();
    f.pull(&mut d, &mut out);
    assert!(matches!(
        out.pop_front(),
        Some(Out::Snapshot { seq: 3, .. })
    ));
    let mut e = f.cursor(Some("e1:999999"));
    f.pull(&mut e, &mut out);
    assert!(matches!(
        out.pop_front(),
        Some(Out::Snapshot { seq: 3, .. })
    ));
}

#[tokio::test]
async fn the_announcement_carries_the_write_a_follower_applies_without_a_read() {
    let Some(server) = server() else { return };
    let cluster = connected(server.1).await;
    let f = feed(None);
    let keys = cluster.names.keys(&f);
    let token = acquire(&cluster, &keys)
        .await
        .expect("acquire")
        .expect("free lease");
    let mut ps = cluster.client.get_async_pubsub().await.expect("pubsub");
    ps.subscribe(cluster.names.events_channel())
        .await
        .expect("subscribe");
    let mut messages = ps.on_message();
    let leader = Fenced {
        cluster: cluster.clone(),
        keys: keys.clone(),
        token,
        epoch: None,
        seq: 0,
        stop: Default::default(),
    };
    let none = Validators::default();
    let body = Bytes::from_static(b"[{\"id\":1}]");
    let rev1 = leader
        .write("e1", 0, true, written(&body, &none, &[]))
        .await
        .expect("first write");
    let first = next(&mut messages).await;
    let (hash, n) = super::notice::decode(&first)
        .map(|(h, n)| (h.to_owned(), n))
        .expect("message");
    assert_eq!(hash, keys.hash);
    assert!(n.is_none(), "a new epoch is read, not told");

    let events = [(2, Bytes::from_static(b"id: e1:2\n\n"))];
    let rev2 = leader
        .write("e1", 1, false, written(&body, &none, &events))
        .await
        .expect("second write");
    let msg = next(&mut messages).await;
    let (hash, n) = super::notice::decode(&msg).expect("message");
    assert_eq!(hash, keys.hash);
    let n = n.expect("the write itself");
    assert_eq!((n.rev as i64, n.from, n.seq), (rev2, 1, 2));
    assert_eq!(rev2, rev1 + 1, "revisions follow each other");
    assert_eq!((n.epoch.as_str(), &n.body), ("e1", &body));
    assert_eq!(n.events, events);
}

/// The next message on a subscription, as bytes.
async fn next(messages: &mut (impl futures_util::Stream<Item = redis::Msg> + Unpin)) -> Vec<u8> {
    use futures_util::StreamExt;
    let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("announced")
        .expect("message");
    m.get_payload_bytes().to_vec()
}
