//! Security and multi-tenancy, adversarially, over real sockets: who may see
//! which feed (forward, check, none, token_param), the query allowlist, the
//! admission limits, CORS, and the request-head limits.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pollcast::config::{AuthMode, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    within("request", req.send()).await.expect("request")
}

// ---------------------------------------------------------------- allowlist

#[tokio::test]
async fn query_allowlist_refuses_other_parameters_and_order_is_normalised() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.feeds[0].query = Some(vec!["status".into(), "limit".into()]);
    cfg.feeds[0].token_param = Some("token".into());
    let pc = pollcast::start(cfg).await.expect("start");

    let r = get(&url(&pc, "/sse/jobs?status=a&debug=1"), &[]).await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.expect("body");
    assert!(body.contains("`debug`"), "{body}");
    assert!(body.contains("status, limit"), "{body}");
    assert_eq!(up.hits("/api/jobs"), 0, "a refused request never polls");
    assert_eq!(pc.registry.live_feeds(), 0);

    // Allowed parameters in either order, plus pollcast's own ones, share one feed.
    let mut a = Sse::connect(&url(&pc, "/sse/jobs?status=a&limit=2")).await;
    let mut b = Sse::connect(&url(&pc, "/sse/jobs?limit=2&status=a&lastEventId=zz")).await;
    let mut c = Sse::connect(&url(&pc, "/sse/jobs?%6Cimit=2&status=a")).await;
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(s.status, 200);
        assert_eq!(s.next().await.event, "snapshot");
    }
    assert_eq!(pc.registry.live_feeds(), 1);
    let seen = up.seen("/api/jobs");
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.path_and_query == "/api/jobs?limit=2&status=a"),
        "{:?}",
        seen.iter().map(|s| &s.path_and_query).collect::<Vec<_>>()
    );
    pc.stop().await;
}

#[tokio::test]
async fn an_empty_allowlist_refuses_every_parameter() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.feeds[0].query = Some(vec![]);
    let pc = pollcast::start(cfg).await.expect("start");
    let r = get(&url(&pc, "/sse/jobs?x=1"), &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("accepted: none"));
    let mut s = Sse::connect(&url(&pc, "/sse/jobs?lastEventId=1")).await;
    assert_eq!(s.next().await.event, "snapshot");
    pc.stop().await;
}

// ---------------------------------------------------------------- forward mode

/// Round `r` of the per-user list; `{{token}}` is the user's Authorization.
fn round(r: usize) -> Value {
    let item = |k: &str, v: usize| json!({"id": format!("{{{{token}}}}/{k}"), "owner": "{{token}}", "v": v});
    match r {
        0 => json!([item("a", 0), item("b", 0)]),
        1 => json!([item("a", 0), item("b", 0), item("c", 0)]),
        2 => json!([item("a", 2), item("c", 0)]),
        _ => json!([item("c", 0), item("d", 3)]),
    }
}

/// What user `auth` must hold after round `r`: id -> item.
fn expected(r: usize, auth: &str) -> std::collections::BTreeMap<String, Value> {
    let text = round(r).to_string().replace("{{token}}", auth);
    let list: Vec<Value> = serde_json::from_str(&text).expect("json");
    list.into_iter()
        .map(|i| (i["id"].as_str().expect("id").to_owned(), i))
        .collect()
}

/// Apply one event to a user's view, failing on anything of another user.
fn apply(
    view: &mut std::collections::BTreeMap<String, Value>,
    e: &eventsource_stream::Event,
    auth: &str,
) {
    let d = data(e);
    let mine = |item: &Value| {
        assert_eq!(item["owner"], json!(auth), "foreign item in {e:?}");
        let id = item["id"].as_str().expect("string id");
        assert!(id.starts_with(&format!("{auth}/")), "foreign id in {e:?}");
        id.to_owned()
    };
    match e.event.as_str() {
        "snapshot" => {
            view.clear();
            for item in d["items"].as_array().expect("items") {
                view.insert(mine(item), item.clone());
            }
        }
        "added" | "updated" => {
            let id = mine(&d["item"]);
            assert_eq!(d["id"], json!(id));
            view.insert(id, d["item"].clone());
        }
        "removed" => {
            let id = d["id"].as_str().expect("id");
            assert!(id.starts_with(&format!("{auth}/")), "foreign removal {e:?}");
            assert!(
                view.remove(id).is_some(),
                "removal of an unknown item {e:?}"
            );
        }
        "stale" | "recovered" => {}
        other => panic!("unexpected event {other}: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_with_random_tokens_never_see_each_others_items() {
    const USERS: usize = 24;
    const ROUNDS: usize = 4;
    let up = TestUpstream::start().await;
    up.set("/api/mine", round(0));
    let mut cfg = config(&up);
    cfg.feeds[0].poll = "/api/mine".into();
    cfg.feeds[0].interval = Duration::from_millis(100);
    cfg.feeds[0].linger = Duration::from_secs(30);
    cfg.feeds[0].token_param = Some("token".into());
    let pc = pollcast::start(cfg).await.expect("start");
    let base = url(&pc, "/sse/jobs");

    let barrier = Arc::new(tokio::sync::Barrier::new(USERS + 1));
    // Every user's last event id, for others to try to resume from.
    let last_ids = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for u in 0..USERS {
        let token = format!("{:016x}", fastrand::u64(..));
        let auth = format!("Bearer {token}");
        let (barrier, last_ids, base) = (barrier.clone(), last_ids.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            // Half send a header, half the token parameter EventSource needs.
            let connect = |resume: Option<String>| {
                let (url, auth, token) = (base.clone(), auth.clone(), token.clone());
                async move {
                    let mut h = vec![];
                    if let Some(id) = &resume {
                        h.push(("last-event-id", id.as_str()));
                    }
                    if u % 2 == 0 {
                        h.push(("authorization", auth.as_str()));
                        Sse::connect_with(&url, &h).await
                    } else {
                        Sse::connect_with(&format!("{url}?token={token}"), &h).await
                    }
                }
            };
            let mut s = connect(None).await;
            assert_eq!(s.status, 200);
            let mut view = std::collections::BTreeMap::new();
            let mut last_id = String::new();
            for r in 0..ROUNDS {
                let want = expected(r, &auth);
                while view != want {
                    let e = s.next().await;
                    apply(&mut view, &e, &auth);
                    last_id = e.id.clone();
                }
                last_ids.lock().unwrap().push(last_id.clone());
                barrier.wait().await;
                if r == 1 {
                    // Reconnect: some resume from their own id, others try
                    // another user's id; all must get only their own data.
                    drop(s);
                    let resume = if u % 3 == 0 {
                        last_id.clone()
                    } else {
                        let ids = last_ids.lock().unwrap();
                        ids[(u * 7 + 1) % ids.len()].clone()
                    };
                    s = connect(Some(resume)).await;
                    assert_eq!(s.status, 200);
                    // A resumed stream continues from the view it had; a
                    // foreign id gets a fresh snapshot (checked by `apply`).
                }
                barrier.wait().await;
            }
            auth
        }));
    }
    for r in 0..ROUNDS {
        within(&format!("all users reach round {r}"), barrier.wait()).await;
        if r + 1 < ROUNDS {
            up.set("/api/mine", round(r + 1));
        }
        within("all users continue", barrier.wait()).await;
    }
    let mut owners = Vec::new();
    for t in tasks {
        owners.push(within("user task", t).await.expect("user task panicked"));
    }
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), USERS, "tokens were distinct");
    assert_eq!(
        pc.registry.live_feeds(),
        USERS,
        "one feed per credential in forward mode"
    );
    pc.stop().await;
}

#[tokio::test]
async fn both_a_header_and_a_token_parameter_is_refused() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.feeds[0].token_param = Some("token".into());
    let pc = pollcast::start(cfg).await.expect("start");
    let r = get(
        &url(&pc, "/sse/jobs?token=abc"),
        &[("authorization", "Bearer other")],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.expect("body").contains("abc"));
    let r = get(&url(&pc, "/sse/jobs?token=a&token=b"), &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(up.hits("/api/jobs"), 0);
    pc.stop().await;
}

// ---------------------------------------------------------------- none mode

#[tokio::test]
async fn none_mode_shares_one_feed_and_forwards_no_credentials() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "seen_as": "{{token}}"}]));
    let mut cfg = config(&up);
    cfg.feeds[0].auth = AuthMode::None;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut a = Sse::connect_with(
        &url(&pc, "/sse/jobs"),
        &[("authorization", "Bearer alice"), ("cookie", "sid=a")],
    )
    .await;
    let mut b = Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer bob")]).await;
    let want = json!({"items": [{"id": 1, "seen_as": "{{token}}"}]});
    assert_eq!(data(&a.next().await), want);
    assert_eq!(data(&b.next().await), want);
    assert_eq!(pc.registry.live_feeds(), 1);
    for s in up.seen("/api/jobs") {
        assert!(s.headers.get("authorization").is_none(), "{s:?}");
        assert!(s.headers.get("cookie").is_none(), "{s:?}");
    }
    pc.stop().await;
}

// ---------------------------------------------------------------- check mode

fn check_config(up: &TestUpstream, recheck: Duration) -> pollcast::Config {
    let mut cfg = config(up);
    let f = &mut cfg.feeds[0];
    f.poll = "/api/shared".into();
    f.auth = AuthMode::Check;
    f.check = Some("/api/me".into());
    f.recheck = recheck;
    f.interval = Duration::from_millis(100);
    f.credentials = Secret::new("Bearer service");
    cfg
}

#[tokio::test]
async fn check_mode_admits_many_users_on_one_poll_loop_with_pollcasts_credentials() {
    const USERS: usize = 8;
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1, "polled_as": "{{token}}"}]));
    // Polls with any credential but pollcast's own would get 401.
    up.guard("/api/shared", &["Bearer service"]);
    let tokens: Vec<String> = (0..USERS)
        .map(|_| format!("Bearer {:016x}", fastrand::u64(..)))
        .collect();
    up.guard(
        "/api/me",
        &tokens.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let pc = pollcast::start(check_config(&up, Duration::from_secs(3600)))
        .await
        .expect("start");
    let mut subs = Vec::new();
    for t in &tokens {
        let mut s = Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", t)]).await;
        assert_eq!(s.status, 200);
        let e = s.next().await;
        assert_eq!(e.event, "snapshot");
        assert_eq!(
            data(&e),
            json!({"items": [{"id": 1, "polled_as": "Bearer service"}]})
        );
        subs.push(s);
    }
    for t in &tokens {
        assert_eq!(
            up.seen_with("/api/me", t).len(),
            1,
            "one admission check each"
        );
    }
    assert_eq!(pc.registry.live_feeds(), 1);
    let before = up.hits("/api/shared");
    up.wait_hits("/api/shared", before + 5).await;
    let polls = up.seen("/api/shared");
    assert!(polls
        .iter()
        .all(|s| s.headers["authorization"] == "Bearer service"));
    for w in polls.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(90),
            "two polls {gap:?} apart: more than one poll loop for {USERS} users"
        );
    }
    pc.stop().await;
}

#[tokio::test]
async fn check_mode_passes_the_upstreams_401_through_and_polls_nothing() {
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &["Bearer good"]);
    let pc = pollcast::start(check_config(&up, Duration::from_secs(3600)))
        .await
        .expect("start");
    for creds in [vec![("authorization", "Bearer bad")], vec![]] {
        let r = get(&url(&pc, "/sse/jobs"), &creds).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"test\"");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.text().await.expect("body"),
            "{\"error\":\"invalid or revoked token\"}"
        );
    }
    assert_eq!(up.hits("/api/shared"), 0, "no feed for refused users");
    assert_eq!(pc.registry.live_feeds(), 0);
    // HEAD checks are answered the same way.
    let mut cfg = check_config(&up, Duration::from_secs(3600));
    cfg.feeds[0].check_method = pollcast::config::CheckMethod::Head;
    let pc2 = pollcast::start(cfg).await.expect("start");
    let r = get(&url(&pc2, "/sse/jobs"), &[("authorization", "Bearer bad")]).await;
    assert_eq!(r.status(), 401);
    assert!(up.seen("/api/me").iter().any(|s| s.method == "HEAD"));
    let mut ok =
        Sse::connect_with(&url(&pc2, "/sse/jobs"), &[("authorization", "Bearer good")]).await;
    assert_eq!(ok.next().await.event, "snapshot");
    pc.stop().await;
    pc2.stop().await;
}

#[tokio::test]
async fn check_mode_fails_closed_when_the_check_cannot_be_answered() {
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    // No guard on /api/me and no list: the upstream answers 404.
    let pc = pollcast::start(check_config(&up, Duration::from_secs(3600)))
        .await
        .expect("start");
    let r = get(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer x")]).await;
    assert_eq!(r.status(), 502);
    assert_eq!(pc.registry.live_feeds(), 0);
    pc.stop().await;
}

#[tokio::test]
async fn a_revoked_user_is_cut_off_at_the_next_recheck_while_others_continue() {
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &["Bearer alice", "Bearer bob"]);
    let recheck = Duration::from_millis(200);
    let pc = pollcast::start(check_config(&up, recheck))
        .await
        .expect("start");
    let mut alice =
        Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer alice")]).await;
    let mut bob =
        Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer bob")]).await;
    assert_eq!(alice.next().await.event, "snapshot");
    assert_eq!(bob.next().await.event, "snapshot");
    // Both are rechecked while admitted.
    wait_until("rechecks", || {
        up.seen_with("/api/me", "Bearer alice").len() >= 2
            && up.seen_with("/api/me", "Bearer bob").len() >= 2
    })
    .await;

    let revoked_at = tokio::time::Instant::now();
    up.revoke("/api/me", "Bearer alice");
    let checks_at_revocation = up.seen_with("/api/me", "Bearer alice").len();
    // Alice's stream ends (anything still in flight may arrive first).
    while alice.next_or_end().await.is_some() {}
    // The first recheck after the revocation closed it: no more than one
    // refused check was needed, and checks come at most `recheck` apart.
    let after = up.seen_with("/api/me", "Bearer alice");
    assert!(
        after.len() <= checks_at_revocation + 1,
        "{} checks after revocation",
        after.len() - checks_at_revocation
    );
    // At most one recheck period plus one check request (the upstream
    // timeout bounds it) passed between the revocation and the close.
    assert!(
        revoked_at.elapsed() <= recheck + Duration::from_secs(2),
        "closed {:?} after the revocation",
        revoked_at.elapsed()
    );
    assert_eq!(
        metric(&pc, r#"pollcast_subscribers_cut_off_total{feed="jobs"}"#).await,
        1.0
    );
    // Her reconnect is refused with the upstream's 401.
    let r = get(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer alice")]).await;
    assert_eq!(r.status(), 401);

    // Bob keeps his stream and gets the next change.
    up.set("/api/shared", json!([{"id": 1}, {"id": 2}]));
    assert_eq!(bob.next_named("added").await.event, "added");
    let bob_checks = up.seen_with("/api/me", "Bearer bob").len();
    wait_until("bob is rechecked again", || {
        up.seen_with("/api/me", "Bearer bob").len() > bob_checks
    })
    .await;
    up.set("/api/shared", json!([{"id": 2}]));
    assert_eq!(bob.next_named("removed").await.event, "removed");
    assert_eq!(pc.registry.subscribers(), 1);
    pc.stop().await;
}

// ---------------------------------------------------------------- limits

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn assert_limited(r: reqwest::Response, status: u16, key: &str) {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["retry-after"], "7");
    let body = r.text().await.expect("body");
    assert!(body.contains(key), "{body}");
}

#[tokio::test]
async fn subscribers_per_client_is_429_and_total_subscribers_is_503() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.limits.max_subscribers_per_client = 2;
    cfg.limits.max_subscribers = 3;
    cfg.limits.retry_after = Duration::from_millis(6500);
    let pc = pollcast::start(cfg).await.expect("start");
    let u = url(&pc, "/sse/jobs");
    let one = client_from("127.0.0.1");
    let two = client_from("127.0.0.2");

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = Sse::connect_using(&one, &u, &[]).await;
        assert_eq!(s.next().await.event, "snapshot");
        held.push(s);
    }
    let r = one.get(&u).send().await.expect("request");
    assert_limited(r, 429, "limits.max_subscribers_per_client = 2").await;

    // Another address is not affected by the first one's share...
    let mut s = Sse::connect_using(&two, &u, &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.next().await.event, "snapshot");
    held.push(s);
    // ...but the server is now full for everyone.
    let r = two.get(&u).send().await.expect("request");
    assert_limited(r, 503, "limits.max_subscribers = 3").await;

    // A closed stream frees its slot.
    drop(held.pop());
    wait_until("slot released", || pc.shared.limits().subscribers() == 2).await;
    let mut s = Sse::connect_using(&two, &u, &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.next().await.event, "snapshot");
    let refused = pc.shared.limits().refused();
    assert_eq!(refused[2], ("max_subscribers", 1));
    assert_eq!(refused[3], ("max_subscribers_per_client", 1));
    for (limit, n) in [
        ("max_subscribers", 1.0),
        ("max_subscribers_per_client", 1.0),
        ("max_feeds", 0.0),
    ] {
        let series = format!("pollcast_limit_refusals_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&pc, &series).await, n, "{series}");
    }
    pc.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts_and_nobody_else_can_forge_it() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.limits.max_subscribers_per_client = 1;
    cfg.limits.retry_after = Duration::from_secs(7);
    cfg.upstream.trusted_proxies = vec![pollcast::cidr::Cidr::parse("127.0.0.1").expect("cidr")];
    let pc = pollcast::start(cfg).await.expect("start");
    let u = url(&pc, "/sse/jobs");
    let proxy = client_from("127.0.0.1");
    let stranger = client_from("127.0.0.2");

    // Two users behind the trusted proxy each get their own share.
    let mut held = Vec::new();
    for user in ["10.0.0.1", "10.0.0.2"] {
        let mut s = Sse::connect_using(&proxy, &u, &[("x-forwarded-for", user)]).await;
        assert_eq!(s.status, 200, "{user}");
        assert_eq!(s.next().await.event, "snapshot");
        held.push(s);
    }
    let r = proxy
        .get(&u)
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .expect("request");
    assert_limited(r, 429, "max_subscribers_per_client").await;

    // An untrusted peer's X-Forwarded-For is ignored: it is one client.
    let mut s = Sse::connect_using(&stranger, &u, &[("x-forwarded-for", "10.0.0.3")]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.next().await.event, "snapshot");
    held.push(s);
    let r = stranger
        .get(&u)
        .header("x-forwarded-for", "10.0.0.4")
        .send()
        .await
        .expect("request");
    assert_limited(r, 429, "max_subscribers_per_client").await;
    pc.stop().await;
}

#[tokio::test]
async fn feeds_per_definition_and_total_feeds_are_503() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    up.set("/api/other", json!([]));
    let mut cfg = config(&up);
    let mut other = cfg.feeds[0].clone();
    other.name = "other".into();
    other.poll = "/api/other".into();
    other.sse = Some("/sse/other".into());
    cfg.feeds.push(other);
    cfg.limits.max_feeds_per_definition = 2;
    cfg.limits.max_feeds = 3;
    cfg.limits.retry_after = Duration::from_secs(7);
    let pc = pollcast::start(cfg).await.expect("start");

    let mut held = Vec::new();
    for q in ["a", "b"] {
        let mut s = Sse::connect(&url(&pc, &format!("/sse/jobs?q={q}"))).await;
        assert_eq!(s.next().await.event, "snapshot");
        held.push(s);
    }
    // Joining an existing feed is never refused.
    let mut s = Sse::connect(&url(&pc, "/sse/jobs?q=a")).await;
    assert_eq!(s.next().await.event, "snapshot");
    held.push(s);
    let r = get(&url(&pc, "/sse/jobs?q=c"), &[]).await;
    assert_limited(r, 503, "limits.max_feeds_per_definition = 2").await;

    let mut s = Sse::connect(&url(&pc, "/sse/other?q=a")).await;
    assert_eq!(s.next().await.event, "snapshot");
    held.push(s);
    let r = get(&url(&pc, "/sse/other?q=b"), &[]).await;
    assert_limited(r, 503, "limits.max_feeds = 3").await;
    for limit in ["max_feeds", "max_feeds_per_definition"] {
        let series = format!("pollcast_limit_refusals_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&pc, &series).await, 1.0, "{series}");
    }
    assert_eq!(pc.registry.live_feeds(), 3);
    assert_eq!(up.hits("/api/jobs?q=c"), 0);
    // A refused request releases the subscriber slot it took.
    assert_eq!(pc.shared.limits().subscribers(), held.len());
    pc.stop().await;
}

// ---------------------------------------------------------------- upstream body

#[tokio::test]
async fn an_oversized_upstream_body_fails_the_poll_and_keeps_the_items() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.upstream.max_body = 1024;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(s.next().await.event, "snapshot");
    up.mode(Mode::Huge {
        bytes: 1024 * 1024,
        declared: false,
    });
    let e = s.next_named("stale").await;
    let reason = data(&e)["reason"].as_str().expect("reason").to_owned();
    assert!(reason.contains("larger than 1024 bytes"), "{reason}");
    // A new subscriber still gets the last good items.
    let mut t = Sse::connect(&url(&pc, "/sse/jobs")).await;
    assert_eq!(data(&t.next().await), json!({"items": [{"id": 1}]}));
    pc.stop().await;
}

// ---------------------------------------------------------------- request heads

/// Read whatever the server sends until it closes (or the deadline).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    within("server closes the connection", async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.server.max_header_size = 16 * 1024;
    let pc = pollcast::start(cfg).await.expect("start");
    let c = TcpStream::connect(pc.addr).await.expect("connect");
    let (mut rd, mut wr) = c.into_split();
    let big = "x".repeat(32 * 1024);
    let req = format!("GET /sse/jobs HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    // Read while writing: the server answers (and closes) before it has
    // read everything, and a reset can discard an answer not yet read.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(req.as_bytes()).await;
        wr
    });
    let mut got = Vec::new();
    within("server answers and closes", async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = writer.await;
    let text = String::from_utf8_lossy(&got);
    // 431, or (when the reset overtook it) a closed connection: never served.
    assert!(
        text.starts_with("HTTP/1.1 431") || text.is_empty(),
        "{}",
        &text[..text.len().min(200)]
    );
    assert_eq!(up.hits("/"), 0);
    assert_eq!(pc.registry.live_feeds(), 0);
    // A head within the limit is served.
    let ok = "y".repeat(8 * 1024);
    let r = get(&url(&pc, "/_pollcast/healthz"), &[("x-ok", ok.as_str())]).await;
    assert_eq!(r.status(), 200);
    pc.stop().await;
}

/// A client that sends `prefix` one byte at a time, then `repeat` over and
/// over (or nothing more), never completing its request head.
async fn slowloris_is_cut_off(prefix: &'static [u8], repeat: &'static [u8]) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    let timeout = Duration::from_millis(400);
    cfg.server.header_read_timeout = timeout;
    let pc = pollcast::start(cfg).await.expect("start");

    let started = tokio::time::Instant::now();
    let mut slow = TcpStream::connect(pc.addr).await.expect("connect");
    let (mut rd, mut wr) = slow.split();
    // One byte every 20ms: never a complete head.
    let dribble = async {
        for &b in prefix.iter().chain(repeat.iter().cycle()) {
            if wr.write_all(&[b]).await.is_err() {
                break; // hung up on: `closed` tells
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::future::pending::<()>().await;
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    // Meanwhile, other clients are served.
    let others = async {
        let mut s = Sse::connect(&url(&pc, "/sse/jobs")).await;
        assert_eq!(s.next().await.event, "snapshot");
        let r = get(&url(&pc, "/_pollcast/healthz"), &[]).await;
        assert_eq!(r.status(), 200);
    };
    let ((), ()) = within("slow client cut off", async {
        tokio::select! {
            _ = dribble => unreachable!("the dribble never ends"),
            r = async { tokio::join!(closed, others) } => r,
        }
    })
    .await;
    let lasted = started.elapsed();
    assert!(
        lasted >= timeout,
        "closed after {lasted:?}, before the {timeout:?} allowed"
    );
    pc.stop().await;
}

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_cut_off() {
    slowloris_is_cut_off(b"GET /sse/jobs HTTP/1.1\r\n", b"X-Pad: 1\r\n").await;
}

#[tokio::test]
async fn a_client_sending_the_http2_preface_byte_by_byte_is_cut_off() {
    slowloris_is_cut_off(b"PRI * HTTP/2.0\r\n", b"").await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let up = TestUpstream::start().await;
    let mut cfg = config(&up);
    cfg.server.header_read_timeout = Duration::from_millis(300);
    let pc = pollcast::start(cfg).await.expect("start");
    let mut c = TcpStream::connect(pc.addr).await.expect("connect");
    let got = read_until_closed(&mut c).await;
    assert!(got.is_empty());
    pc.stop().await;
}

// ---------------------------------------------------------------- CORS

async fn cors_setup() -> (TestUpstream, pollcast::Running) {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let mut cfg = config(&up);
    cfg.cors.allowed_origins = vec!["https://app.example.com".into()];
    cfg.cors.allow_credentials = true;
    let pc = pollcast::start(cfg).await.expect("start");
    (up, pc)
}

async fn options(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(reqwest::Method::OPTIONS, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    within("preflight", req.send()).await.expect("preflight")
}

#[tokio::test]
async fn cors_preflight_for_allowed_and_refused_origins() {
    let (up, pc) = cors_setup().await;
    let u = url(&pc, "/sse/jobs");
    let r = options(
        &u,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "Last-Event-ID, Authorization",
            ),
        ],
    )
    .await;
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, HEAD");
    assert_eq!(
        h["access-control-allow-headers"],
        "last-event-id, authorization"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["vary"], "Origin");

    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("https://app.example.com", "POST", ""),
        ("https://app.example.com", "GET", "x-custom"),
    ] {
        let mut hs = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            hs.push(("access-control-request-headers", headers));
        }
        let r = options(&u, &hs).await;
        assert_eq!(r.status(), 403, "{origin} {method} {headers}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(up.hits("/"), 0);
    pc.stop().await;
}

#[tokio::test]
async fn cors_actual_requests_for_allowed_and_refused_origins() {
    let (up, pc) = cors_setup().await;
    let u = url(&pc, "/sse/jobs");
    let mut s = Sse::connect_with(
        &u,
        &[("origin", "https://app.example.com"), ("cookie", "sid=1")],
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(
        s.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(s.headers["access-control-allow-credentials"], "true");
    assert_eq!(s.next().await.event, "snapshot");

    let r = get(
        &u,
        &[("origin", "https://evil.example"), ("cookie", "sid=2")],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(
        up.seen("/api/jobs")
            .iter()
            .all(|s| s.headers.get("cookie").is_some_and(|c| c == "sid=1")),
        "the refused origin's cookie never reached the upstream"
    );
    // Same-origin pages (Origin = Host) and non-browser clients are not CORS.
    let host = pc.addr.to_string();
    let origin = format!("http://{host}");
    let mut s = Sse::connect_with(&u, &[("origin", &origin)]).await;
    assert_eq!(s.status, 200);
    assert!(s.headers.get("access-control-allow-origin").is_none());
    assert_eq!(s.next().await.event, "snapshot");
    pc.stop().await;
}

#[tokio::test]
async fn pass_through_keeps_the_upstreams_own_cors_headers() {
    let (_up, pc) = cors_setup().await;
    // The upstream allows another origin, and no credentials: pollcast must
    // neither add its own grant nor change the upstream's.
    let r = get(
        &url(
            &pc,
            "/echo/x?header=access-control-allow-origin:https://other.example&header=vary:Accept",
        ),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://other.example");
    assert!(h.get("access-control-allow-credentials").is_none());
    assert_eq!(h.get_all("vary").iter().collect::<Vec<_>>(), vec!["Accept"]);
    // And a pass-through preflight goes to the upstream, untouched.
    let r = options(
        &url(&pc, "/echo/y"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_eq!(r.headers()["x-echo"], "yes");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    pc.stop().await;
}

#[tokio::test]
async fn check_defaults_to_the_poll_path_with_the_query_and_head_is_checked_too() {
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/shared", &["Bearer service", "Bearer user"]);
    let mut cfg = check_config(&up, Duration::from_secs(3600));
    cfg.feeds[0].check = None;
    let pc = pollcast::start(cfg).await.expect("start");
    let mut s = Sse::connect_with(
        &url(&pc, "/sse/jobs?b=2&a=1"),
        &[("authorization", "Bearer user")],
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.next().await.event, "snapshot");
    let checks = up.seen_with("/api/shared", "Bearer user");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].path_and_query, "/api/shared?a=1&b=2");
    assert_eq!(checks[0].method, "GET");
    // HEAD of the SSE path runs the same admission, without a stream.
    let r = reqwest::Client::new()
        .head(url(&pc, "/sse/jobs"))
        .header("authorization", "Bearer nobody")
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 401);
    pc.stop().await;
}

#[tokio::test]
async fn a_stream_is_closed_after_three_failed_rechecks_not_at_the_first() {
    let up = TestUpstream::start().await;
    up.set("/api/shared", json!([{"id": 1}]));
    up.guard("/api/me", &["Bearer alice"]);
    let pc = pollcast::start(check_config(&up, Duration::from_millis(100)))
        .await
        .expect("start");
    let mut s =
        Sse::connect_with(&url(&pc, "/sse/jobs"), &[("authorization", "Bearer alice")]).await;
    assert_eq!(s.next().await.event, "snapshot");
    let before = up.hits("/api/me");
    // The check endpoint (and the polls) now answer 500: not a revocation.
    up.mode(Mode::Status(500));
    // The poll failure arrives as `stale` on the still-open stream.
    assert_eq!(s.next_named("stale").await.event, "stale");
    while s.next_or_end().await.is_some() {}
    let failed = up.hits("/api/me") - before;
    assert!(failed >= 3, "closed after {failed} failed rechecks");
    assert_eq!(
        pollcast::auth::MAX_FAILED_RECHECKS,
        3,
        "docs/security.md documents three"
    );
    pc.stop().await;
}

#[tokio::test]
async fn oversized_request_headers_over_http2_are_refused() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([]));
    let mut cfg = config(&up);
    cfg.server.max_header_size = 32 * 1024;
    let pc = pollcast::start(cfg).await.expect("start");
    let io = TcpStream::connect(pc.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = |extra: usize| {
        http::Request::get(format!("http://{}/_pollcast/healthz", pc.addr))
            .header("x-pad", "z".repeat(extra))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    // Above hyper's own 16 KiB default, within the configured 32 KiB.
    let ok = within("small head", sender.send_request(req(20 * 1024)))
        .await
        .expect("small head is served");
    assert_eq!(ok.status(), 200);
    // Over the limit: 431 on that stream (h2 answers it and refuses the rest).
    let over = within("head over the limit", sender.send_request(req(40 * 1024))).await;
    match over {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
    }
    // Far over it: the connection is told to go away.
    let far = within(
        "head far over the limit",
        sender.send_request(req(256 * 1024)),
    )
    .await;
    let e = far.expect_err("not served");
    assert!(
        format!("{e:?}").contains("ENHANCE_YOUR_CALM") || e.is_closed() || e.is_canceled(),
        "{e:?}"
    );
    assert_eq!(up.hits("/"), 0);
    pc.stop().await;
}
