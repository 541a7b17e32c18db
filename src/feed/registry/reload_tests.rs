use super::*;
use crate::config::UpstreamUrl;

fn registry(feeds: Vec<FeedConfig>) -> (Registry, CancellationToken) {
    // Nothing listens there: poll loops fail quietly and publish nothing.
    let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("url");
    let config = Config::new(url, feeds);
    let shutdown = CancellationToken::new();
    let r = Registry::new(
        &config,
        Upstream::new(&config.upstream),
        shutdown.clone(),
        Arc::new(Metrics::new()),
    );
    (r, shutdown)
}

#[tokio::test]
async fn a_request_routed_before_a_reload_is_sent_to_the_new_definition() {
    let (r, shutdown) = registry(vec![FeedConfig::new("a", "/a")]);
    let old = r.route("/sse/a").expect("routed").0[0];
    let live = r.subscribe(FeedKey::new(old, String::new(), None, None));
    let live = live.expect("subscribed");
    assert!(!live.feed.is_retired());

    let outcome = r.reload(&[FeedConfig::new("a", "/a2")]);
    assert_eq!(outcome.changed, ["a"]);
    assert_eq!(outcome.ended_subscribers, 1);
    assert!(live.feed.is_retired(), "the live feed was retired");
    let new = r.route("/sse/a").expect("still routed").0[0];
    assert_ne!(new, old, "a changed definition gets a new index");
    assert_eq!(r.defs().get(new).map(|d| d.poll.as_str()), Some("/a2"));

    // A late subscriber with the old index joins no live feed and starts
    // no poll loop: its stream is ended at once, to reconnect.
    let late = r
        .subscribe(FeedKey::new(old, String::new(), None, None))
        .expect("not refused");
    assert!(late.feed.is_retired());
    assert_eq!(r.live_feeds(), 0);
    assert!(r.defs().is_retired(old) && !r.defs().is_retired(new));
    shutdown.cancel();
    drop((live, late));
    r.closed().await;
}

#[tokio::test]
async fn an_unchanged_definition_keeps_its_index_and_live_feeds() {
    let (r, shutdown) = registry(vec![FeedConfig::new("a", "/a"), FeedConfig::new("b", "/b")]);
    let a = r.route("/sse/a").expect("a").0[0];
    let sub = r
        .subscribe(FeedKey::new(a, String::new(), None, None))
        .expect("subscribed");
    let outcome = r.reload(&[FeedConfig::new("a", "/a"), FeedConfig::new("c", "/c")]);
    assert_eq!(
        outcome,
        Reloaded {
            added: vec!["c".into()],
            removed: vec!["b".into()],
            changed: vec![],
            unchanged: vec!["a".into()],
            ended_subscribers: 0,
        }
    );
    assert_eq!(r.route("/sse/a"), Some((vec![a], vec![])));
    assert_eq!(r.route("/sse/b"), None);
    assert!(r.route("/sse/c").is_some());
    assert!(!sub.feed.is_retired());
    assert_eq!(r.live_feeds(), 1);
    let names: Vec<_> = r.defs().iter().map(|(_, d)| d.name.clone()).collect();
    assert_eq!(names, ["a", "c"]);
    shutdown.cancel();
    drop(sub);
    r.closed().await;
}
