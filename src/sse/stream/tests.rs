use std::sync::Arc;

use proptest::strategy::Strategy;

use super::*;
use crate::config::{Config, FeedConfig, UpstreamUrl};
use crate::feed::extract::extract;
use crate::feed::FeedKey;
use crate::metrics::Metrics;
use crate::pointer::Pointer;
use crate::shared::Shared;
use crate::upstream::Upstream;

/// A registry of `config`'s feeds in its context, with fresh metrics, and its shutdown.
fn registry_for(config: &Config) -> (Shared, CancellationToken) {
    let shutdown = CancellationToken::new();
    let registry = Shared::from_config(
        config,
        Upstream::new(&config.upstream),
        shutdown.clone(),
        Arc::new(Metrics::new()),
    );
    (registry, shutdown)
}

/// An empty item list, as a first poll of `[]` gives.
fn empty_list() -> Arc<crate::feed::extract::ItemList> {
    let (l, _) = extract(
        Bytes::from_static(b"[]"),
        &Pointer::default(),
        &Pointer::parse("/id").expect("p"),
    )
    .expect("list");
    Arc::new(l)
}

#[tokio::test]
async fn a_subscriber_that_fell_behind_is_resynced_and_counted() {
    // An upstream nobody listens on: the poll loop fails quietly and
    // never publishes, so this test alone drives the feed.
    let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("url");
    let mut config = Config::new(url, vec![FeedConfig::new("t", "/t")]);
    config.sse.history = 1;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let registry = Shared::from_config(
        &config,
        Upstream::new(&config.upstream),
        shutdown.clone(),
        metrics.clone(),
    );
    let sub = registry
        .subscribe(FeedKey::new(0, String::new(), None, None))
        .expect("no limits configured");
    let feed = sub.feed.clone();
    let mut s = Subscriber::new(vec![sub], None, &config.sse, shutdown.clone());
    let list = |body: &'static str| {
        let (l, _) = extract(
            Bytes::from_static(body.as_bytes()),
            &Pointer::default(),
            &Pointer::parse("/id").expect("p"),
        )
        .expect("list");
        Arc::new(l)
    };
    feed.publish(list("[]"), vec![], true);
    s.next().await.expect("retry"); // retry:
    s.next().await.expect("id"); // first snapshot
    s.next().await.expect("body");
    // Three events while the subscriber does not read: history holds one.
    for _ in 0..3 {
        let seq = feed.next_seq();
        let e = encode::event(&feed.id(seq), "added", b"{}");
        feed.publish(list("[]"), vec![(seq, e)], false);
    }
    s.next().await.expect("id");
    let body = s.next().await.expect("snapshot body");
    assert!(String::from_utf8_lossy(&body).contains("event: snapshot"));
    let text = metrics.render(&registry.gauges());
    assert!(
        text.contains("pollcast_subscribers_resynced_total{feed=\"t\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("pollcast_snapshots_sent_total{feed=\"t\"} 2\n"),
        "{text}"
    );
    shutdown.cancel();
    drop(s);
    registry.closed().await;
}

#[tokio::test(start_paused = true)]
async fn keepalives_come_from_one_shared_tick_and_only_to_silent_streams() {
    // An upstream that accepts and never answers: the one poll hangs
    // (timeout 1h), so nothing but this test publishes, and no failure
    // turns the feed stale.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = UpstreamUrl::parse(&format!("http://{}", listener.local_addr().expect("addr")))
        .expect("url");
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut config = Config::new(url, vec![FeedConfig::new("t", "/t")]);
    config.upstream.timeout = Duration::from_secs(3600);
    config.sse.keepalive = Duration::from_secs(10);
    let (registry, shutdown) = registry_for(&config);
    let sub = registry
        .subscribe(FeedKey::new(0, String::new(), None, None))
        .expect("no limits configured");
    let feed = sub.feed.clone();
    let t0 = tokio::time::Instant::now();
    let mut s = Subscriber::new(vec![sub], None, &config.sse, shutdown.clone());
    feed.publish(empty_list(), vec![], true);
    for _ in 0..3 {
        s.next().await.expect("retry, id, snapshot");
    }
    // Ticks at 5 s (the stream wrote since it started: nothing) and
    // 10 s (silent for a whole tick period: a keepalive).
    let k = s.next().await.expect("keepalive");
    assert_eq!(k, feed.keepalive);
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    // An event at 17 s: the next tick sees it was written, the one after
    // sends a keepalive, between half and all of `keepalive` after it
    // (never more than `keepalive` of silence).
    tokio::time::advance(Duration::from_secs(7)).await;
    let seq = feed.next_seq();
    let e = encode::event(&feed.id(seq), "added", b"{}");
    feed.publish(empty_list(), vec![(seq, e.clone())], false);
    assert_eq!(s.next().await.expect("event"), e);
    let event_at = t0.elapsed();
    assert_eq!(s.next().await.expect("keepalive"), feed.keepalive);
    let silence = t0.elapsed() - event_at;
    assert!(
        silence >= Duration::from_secs(5) && silence <= Duration::from_secs(10),
        "{silence:?}"
    );
    shutdown.cancel();
    // Shutdown reaches the waiting subscriber through the same signal.
    let hint = s.next().await.expect("retry hint");
    assert!(
        String::from_utf8_lossy(&hint).starts_with("retry: "),
        "{hint:?}"
    );
    assert_eq!(s.next().await, None);
    drop(s);
    registry.closed().await;
}

/// One step of a shared-path stream's life.
#[derive(Debug, Clone)]
enum Step {
    /// An event on feed `0` or `1`.
    Change(usize),
    /// The client reads everything it has been sent so far.
    Read,
    /// The connection drops; the client reconnects with its last id.
    Reconnect,
}

/// Every `(event, id)` in `wire`, status events and snapshots included.
fn blocks(wire: &str) -> Vec<(String, Option<String>, String)> {
    wire.split("\n\n")
        .filter(|b| b.contains("event: "))
        .map(|b| {
            let field = |name: &str| {
                b.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            (
                field("event: ").unwrap_or_default(),
                field("id: "),
                field("data: ").unwrap_or_default(),
            )
        })
        .collect()
}

/// Runs `f` on a current-thread runtime of its own (tests that are not
/// `#[tokio::test]` because they are called from a property loop).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// An upstream nobody polls in these tests (the feeds are fed by hand).
fn nowhere() -> UpstreamUrl {
    UpstreamUrl::parse("http://127.0.0.1:9").expect("url")
}

/// Runs `steps` against two feeds sharing one stream; returns every
/// `added` payload the client received, across all its connections.
fn shared_path_run(steps: &[Step]) -> (Vec<String>, Vec<String>) {
    block_on(async {
        let url = nowhere();
        let mut config = Config::new(
            url,
            vec![FeedConfig::new("a", "/a"), FeedConfig::new("b", "/b")],
        );
        config.sse.history = 1024;
        let (registry, shutdown) = registry_for(&config);
        let subscribe = || {
            (0..2)
                .map(|i| {
                    registry
                        .subscribe(FeedKey::new(i, String::new(), None, None))
                        .expect("no limits")
                })
                .collect::<Vec<_>>()
        };
        let feeds: Vec<_> = subscribe().into_iter().map(|s| s.feed.clone()).collect();
        for f in &feeds {
            f.publish(empty_list(), vec![], true);
        }
        let mut published = Vec::new();
        let mut received = Vec::new();
        let mut last_id: Option<String> = None;
        let mut s = Subscriber::new(subscribe(), None, &config.sse, shutdown.clone());
        let mut read = |s: &mut Subscriber, last_id: &mut Option<String>| {
            let mut wire = Vec::new();
            while let Some(Some(b)) = s.next().now_or_never() {
                wire.extend_from_slice(&b);
            }
            for (event, id, data) in blocks(&String::from_utf8_lossy(&wire)) {
                if let Some(id) = id {
                    *last_id = Some(id);
                }
                if event == "added" {
                    received.push(data);
                }
            }
        };
        // The first read is the two snapshots: every event after it
        // must arrive as an event.
        read(&mut s, &mut last_id);
        assert!(last_id.is_some(), "snapshots read");
        for step in steps {
            match step {
                Step::Change(i) => {
                    let f = &feeds[*i];
                    let seq = f.next_seq();
                    let data = format!("{i}:{seq}");
                    published.push(data.clone());
                    let e = encode::event(&f.id(seq), "added", data.as_bytes());
                    f.publish(empty_list(), vec![(seq, e)], false);
                }
                Step::Read => read(&mut s, &mut last_id),
                Step::Reconnect => {
                    s = Subscriber::new(
                        subscribe(),
                        last_id.as_deref(),
                        &config.sse,
                        shutdown.clone(),
                    );
                }
            }
        }
        read(&mut s, &mut last_id);
        shutdown.cancel();
        drop(s);
        registry.closed().await;
        (published, received)
    })
}

#[test]
fn a_resumed_shared_stream_carries_every_feeds_position() {
    // Read a's and b's events, reconnect, hear only of a, reconnect:
    // b's events in between must still be replayed.
    use Step::*;
    let (published, received) = shared_path_run(&[
        Change(0),
        Change(1),
        Read,
        Reconnect,
        Change(0),
        Read,
        Change(1),
        Reconnect,
        Read,
    ]);
    assert_eq!(received, published);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Repeated reconnects across interleaved changes of several feeds
    /// never lose or repeat an event.
    #[test]
    fn shared_stream_resumes_never_lose_or_repeat(
        steps in proptest::collection::vec(
            proptest::prop_oneof![
                4 => (0..2usize).prop_map(Step::Change),
                3 => proptest::strategy::Just(Step::Read),
                2 => proptest::strategy::Just(Step::Reconnect),
            ],
            1..60,
        )
    ) {
        let (mut published, mut received) = shared_path_run(&steps);
        // Feeds are independent: order within each feed is what counts.
        for i in 0..2 {
            let mine = |v: &Vec<String>| -> Vec<String> {
                v.iter().filter(|d| d.starts_with(&format!("{i}:"))).cloned().collect()
            };
            proptest::prop_assert_eq!(mine(&received), mine(&published));
        }
        published.sort();
        received.sort();
        proptest::prop_assert_eq!(received, published);
    }
}

/// A shared path whose first feed sends each entry of `/tx` as `tx`: the
/// composite id carries that feed's held count, and a resume from an id of
/// another instance (a restart) gets only the entries after it.
#[test]
fn a_shared_stream_carries_the_held_count_across_a_restart() {
    block_on(async {
        let url = nowhere();
        let mut a = FeedConfig::new("a", "/a");
        a.sse = Some("/s".into());
        a.object = true;
        a.append = Some(Pointer::parse("/tx").expect("p"));
        a.events.append_each = true;
        a.events.appended = Some(crate::config::EventSpec {
            event: Some("tx".into()),
            data: Some(toml::Value::String("{{entry}}".into())),
            send: None,
        });
        let mut b = FeedConfig::new("b", "/b");
        b.sse = Some("/s".into());
        let config = Config::new(url, vec![a, b]);
        let object = |tx: &[u64]| {
            let body = serde_json::json!({ "tx": tx }).to_string();
            let l = crate::feed::object::extract_object(
                Bytes::from(body),
                &Pointer::default(),
                &Pointer::parse("/id").expect("p"),
            )
            .expect("object");
            Arc::new(l)
        };
        // One pollcast instance: its feeds hold `tx`, it is followed from
        // `last_id`; returns the `tx` entries told and the last id.
        // `late`: `a` has no state yet when the client resumes (a restarted
        // pollcast before its first poll of `a`); the id it is sent then is
        // returned as the third value.
        let run = |tx: &'static [u64], last_id: Option<String>, late: bool| {
            let (registry, shutdown) = registry_for(&config);
            let subs: Vec<_> = (0..2)
                .map(|i| {
                    registry
                        .subscribe(FeedKey::new(i, String::new(), None, None))
                        .expect("no limits")
                })
                .collect();
            let a = subs[0].feed.clone();
            if !late {
                a.publish(object(tx), vec![], true);
            }
            subs[1].feed.publish(empty_list(), vec![], true);
            let mut s = Subscriber::new(subs, last_id.as_deref(), &config.sse, shutdown.clone());
            let mut wire = Vec::new();
            let mut read = |s: &mut Subscriber| {
                while let Some(Some(b)) = s.next().now_or_never() {
                    wire.extend_from_slice(&b);
                }
                blocks(&String::from_utf8_lossy(&wire))
            };
            let mut before = None;
            if late {
                before = read(&mut s).iter().rev().find_map(|(_, id, _)| id.clone());
                a.publish(object(tx), vec![], true);
            }
            let blocks = read(&mut s);
            let told: Vec<String> = blocks
                .iter()
                .filter(|(e, _, _)| e == "tx")
                .map(|(_, _, d)| d.clone())
                .collect();
            let last = blocks.iter().rev().find_map(|(_, id, _)| id.clone());
            shutdown.cancel();
            drop(s);
            (told, last, before, registry)
        };
        let (told, last, _, first) = run(&[1, 2], None, false);
        assert_eq!(told, ["1", "2"]);
        let last = last.expect("an id");
        let parts: Vec<&str> = last.split(',').collect();
        assert!(
            parts.len() == 2 && parts[0].ends_with(":1.2") && !parts[1].contains('.'),
            "{last}"
        );
        first.closed().await;
        // A restart: new epochs, one entry more.
        let (told, again, _, second) = run(&[1, 2, 3], Some(last.clone()), false);
        assert_eq!(told, ["3"], "only the entry the client lacks");
        let again = again.expect("an id");
        assert!(
            again.split(',').next().is_some_and(|p| p.ends_with(":1.3")),
            "{again}"
        );
        assert_ne!(again, last);
        second.closed().await;
        // Another restart, `a` late: until it has state, the ids carry the
        // client's own part for it (its count), not `-`.
        let (told, _, before, third) = run(&[1, 2, 3, 4], Some(again.clone()), true);
        let before = before.expect("b's snapshot has an id");
        assert_eq!(
            before.split(',').next(),
            again.split(',').next(),
            "{before}"
        );
        assert_eq!(told, ["4"]);
        third.closed().await;
    });
}

/// An idle subscriber is mostly this value (boxed once as its response
/// body): a wait must not reserve room for the largest wait in every one
/// (an `async` body did, 408 bytes; see bench/profiles/README.md).
#[test]
fn an_idle_subscriber_body_stays_small() {
    fn boxed_as_body<B: http_body::Body>() -> usize {
        std::mem::size_of::<B>()
    }
    let size = boxed_as_body::<Subscriber>();
    assert!(size <= 192, "the body is {size} bytes");
}
