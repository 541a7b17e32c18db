//! `[cluster]`: what a leader tells its subscribers besides events reaches
//! every replica byte for byte (`stale`/`recovered`, an object feed's
//! terminal event). Replicas are pollcast processes (three; two for the
//! object feed). A replica back from a partition is `cluster_outage`'s.

mod common;

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

/// The next block that is an event (comments and `retry:` hints skipped).
async fn event_block(s: &mut RawSse) -> String {
    loop {
        let b = s.block().await;
        if b.lines().any(|l| l.starts_with("data:")) {
            return b;
        }
    }
}

/// The `event:` name of a raw block (`message` without one).
fn name_of(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .unwrap_or("message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_byte_identical_streams() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    // Three pollcast processes, as an operator runs them.
    let feeds = JOBS_EVERY_100MS.replace("100ms", "50ms");
    let file = child_config_with(&up, &redis, &feeds, "300ms", "100ms");
    let pcs = spawn_replicas(3, &file).await;
    let mut streams = Vec::new();
    for pc in &pcs {
        let addr = pc.addr().await;
        streams.push(RawSse::connect(&format!("http://{addr}/sse/jobs")).await);
    }
    let mut blocks = Vec::new();
    for s in &mut streams {
        blocks.push(event_block(s).await);
    }
    // Added, updated, removed: one change per poll, each told by all three.
    let lists = [
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}, {"id": 3, "s": "c"}]),
        json!([{"id": 1, "s": "z"}, {"id": 2, "s": "b"}, {"id": 3, "s": "c"}]),
        json!([{"id": 1, "s": "z"}, {"id": 3, "s": "c"}]),
    ];
    for list in lists {
        up.set("/api/jobs", list);
        for s in &mut streams {
            blocks.push(event_block(s).await);
        }
    }
    for step in blocks.chunks(3) {
        assert_eq!(step[0], step[1], "replicas 0 and 1");
        assert_eq!(step[0], step[2], "replicas 0 and 2");
    }
    let names: Vec<&str> = blocks.iter().step_by(3).map(|b| name_of(b)).collect();
    assert_eq!(names, ["snapshot", "added", "updated", "removed"]);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_tell_stale_and_recovered_with_the_leaders_bytes() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let file = child_config(&up, &redis);
    let pcs = spawn_replicas(3, &file).await;
    let mut urls = Vec::new();
    for pc in &pcs {
        urls.push(format!("{}/sse/jobs", base_of(pc).await));
    }
    // Replica 0 starts the feed (it leads); 1 follows; 2 gets its first
    // subscriber during the outage.
    let mut a = RawSse::connect(&urls[0]).await;
    let snap = event_block(&mut a).await;
    assert_eq!(name_of(&snap), "snapshot");
    let mut b = RawSse::connect(&urls[1]).await;
    assert_eq!(event_block(&mut b).await, snap, "one snapshot, one id");

    up.mode(Mode::Status(500));
    let stale = event_block(&mut a).await;
    assert_eq!(name_of(&stale), "stale", "{stale}");
    assert_eq!(
        event_block(&mut b).await,
        stale,
        "a follower tells the leader's stale, byte for byte"
    );
    let mut c = RawSse::connect(&urls[2]).await;
    assert_eq!(event_block(&mut c).await, snap, "the last good state");
    assert_eq!(event_block(&mut c).await, stale, "then the outage");

    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    up.mode(Mode::Ok);
    let recovered = event_block(&mut a).await;
    assert_eq!(name_of(&recovered), "recovered", "{recovered}");
    let added = event_block(&mut a).await;
    assert_eq!(name_of(&added), "added", "{added}");
    for s in [&mut b, &mut c] {
        assert_eq!(event_block(s).await, recovered, "recovered, byte for byte");
        assert_eq!(event_block(s).await, added, "then the same events");
    }
    drop((a, b, c));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_tell_an_object_feeds_terminal_event_and_end_the_stream() {
    let Some(redis) = RedisServer::start_or_skip().await else {
        return;
    };
    let up = TestUpstream::start().await;
    let job = |status: &str, progress: u32| json!({"id": 42, "status": status, "progress": progress, "transactions": []});
    up.set("/api/jobs/42", job("running", 10));
    // The shipped example as a file, on the test upstream, polled every
    // 100ms, with `[cluster]`.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/contracts/5-job-progress.toml"))
        .expect("example");
    let upstream = format!("url = \"{}\"", up.url());
    let mut text = example
        .replace("url = \"http://127.0.0.1:3000\"", &upstream)
        .replace("interval = \"500ms\"", "interval = \"100ms\"");
    assert!(text.contains(&upstream) && text.contains("100ms"), "{text}");
    text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{text}\n[cluster]\nredis = \"{}\"\nlease = \"300ms\"\ntimeout = \"100ms\"\n",
        redis.url()
    );
    let file = child::config_file(&text);
    let pcs = spawn_replicas(2, &file).await;
    let mut urls = Vec::new();
    for pc in &pcs {
        urls.push(format!("{}/sse/jobs/42", base_of(pc).await));
    }
    let mut a = RawSse::connect(&urls[0]).await;
    let first = event_block(&mut a).await;
    let mut b = RawSse::connect(&urls[1]).await;
    assert_eq!(event_block(&mut b).await, first);

    up.set("/api/jobs/42", job("completed", 100));
    let progress = event_block(&mut a).await;
    let end = event_block(&mut a).await;
    assert_eq!(name_of(&end), "completed", "{end}");
    assert!(end.contains(":end\n"), "{end}");
    assert_eq!(a.next_block().await, None, "the leader's stream ends");
    assert_eq!(event_block(&mut b).await, progress);
    assert_eq!(
        event_block(&mut b).await,
        end,
        "a follower tells the terminal event, byte for byte"
    );
    assert_eq!(b.next_block().await, None, "and ends the stream");
    // A late viewer on the follower hears the final state and the end too.
    let mut late = RawSse::connect(&urls[1]).await;
    let last = event_block(&mut late).await;
    assert!(last.contains("\"completed\""), "{last}");
    assert_eq!(event_block(&mut late).await, end);
    assert_eq!(late.next_block().await, None);
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}
