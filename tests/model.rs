//! Model-based check of the whole event path under churn: a random upstream
//! (adds, nested updates, removes, reorders, id type changes, duplicate and
//! missing ids, huge items, text with SSE framing characters, CR, NUL,
//! U+2028, exact and huge numbers) with random faults (5xx, 429/503 with
//! `Retry-After`, resets mid-body, truncated JSON, drips past the timeout,
//! upstream down), read by subscribers that cut at random event boundaries
//! (most often right after a status event) and resume by `Last-Event-ID`
//! header or `lastEventId` query parameter.
//!
//! Invariants, checked on every event:
//! - a resume never leaves a gap or a duplicate: after a resume from
//!   `<epoch>:<n>` the next change event is `<epoch>:<n+1>`, never a snapshot
//!   (the history is large enough here), and every change event follows the
//!   last id received by exactly one;
//! - a status event never carries an id ahead of the last one received;
//! - `added` is for an id the subscriber does not have, `updated` and
//!   `removed` for one it has, and an `updated` patch applied to the
//!   subscriber's copy gives exactly the `item` beside it;
//! - once the upstream is stable, every subscriber's model equals the
//!   upstream's list exactly.
//!
//! The CI variant is short and seeded; `bench/model.sh` runs the long one
//! (`POLLCAST_MODEL_SECS`, `POLLCAST_MODEL_SEED`, `POLLCAST_MODEL_SUBSCRIBERS`)
//! and reports what it covered.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Item key as pollcast matches it: numbers by their text, strings by value.
fn key_of(id: &Value) -> Option<String> {
    match id {
        Value::Number(_) | Value::String(_) => serde_json::to_string(id).ok(),
        _ => None,
    }
}

/// The list as a subscriber must end up seeing it: items with a string or
/// number id, the first of several with one id winning.
fn expected(list: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for item in list.as_array().into_iter().flatten() {
        if let Some(k) = item.get("id").and_then(key_of) {
            out.entry(k).or_insert_with(|| item.clone());
        }
    }
    out
}

/// Text that must survive SSE framing and JSON untouched.
const NASTY: &[&str] = &[
    "plain",
    "two\n\nlines",
    "data: fake\nid: 999\nevent: removed\n\n",
    "carriage\rreturn",
    "nul\u{0}byte",
    "line\u{2028}separator\u{2029}",
    ": comment\r\n",
    "emoji 😀 and ünïcode",
    "",
];

/// A number as the upstream writes it: exact doubles, long decimals, huge integers.
fn number(rng: &mut fastrand::Rng) -> Value {
    let text = match rng.u8(0..5) {
        0 => format!("{:?}", f64::from_bits(rng.u64(..)) % 1e6),
        1 => rng.i64(..).to_string(),
        2 => format!("{}{}", rng.u64(1..), rng.u64(..)),
        3 => format!("0.{}{}", rng.u64(..), rng.u64(..)),
        _ => rng.u32(..).to_string(),
    };
    // NaN/inf never come from the `% 1e6` of a finite double; guard anyway.
    serde_json::from_str(&text).unwrap_or_else(|_| json!(0))
}

fn item(rng: &mut fastrand::Rng, id: Value) -> Value {
    let mut v = json!({
        "id": id,
        "name": NASTY[rng.usize(..NASTY.len())],
        "n": number(rng),
        "nested": {"a": [number(rng), NASTY[rng.usize(..NASTY.len())]], "b": {"c": number(rng)}},
    });
    if rng.u8(0..50) == 0 {
        v["huge"] = json!("h".repeat(100_000 + rng.usize(..1000)));
    }
    v
}

fn random_id(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..4) {
        0 => json!(format!("s{}", rng.u8(0..20))),
        _ => json!(rng.u8(0..30)),
    }
}

/// One random change of the upstream's list.
fn mutate(rng: &mut fastrand::Rng, list: &mut Vec<Value>) {
    match rng.u8(0..12) {
        0..=2 => {
            let id = random_id(rng);
            let it = item(rng, id);
            let at = rng.usize(..=list.len());
            list.insert(at, it);
        }
        3..=5 if !list.is_empty() => {
            // Update one nested field (or several) of an item.
            let i = rng.usize(..list.len());
            match rng.u8(0..3) {
                0 => list[i]["nested"]["b"]["c"] = number(rng),
                1 => list[i]["name"] = json!(NASTY[rng.usize(..NASTY.len())]),
                _ => list[i]["n"] = number(rng),
            }
        }
        6 | 7 if !list.is_empty() => {
            let i = rng.usize(..list.len());
            list.remove(i);
        }
        8 => rng.shuffle(list),
        9 if !list.is_empty() => {
            // An id changes type: 7 becomes "7" (a new id; 7 is removed).
            let i = rng.usize(..list.len());
            let id = list[i]["id"].clone();
            list[i]["id"] = match id {
                Value::Number(n) => json!(n.to_string()),
                other => other,
            };
        }
        10 if !list.is_empty() => {
            // A duplicate id (the first one wins) or an item without an id.
            let i = rng.usize(..list.len());
            let mut dup = list[i].clone();
            if rng.bool() {
                dup["name"] = json!("the duplicate");
            } else {
                dup.as_object_mut().map(|o| o.remove("id"));
            }
            list.push(dup);
        }
        _ => {}
    }
}

/// A random fault, held for a while.
fn fault(rng: &mut fastrand::Rng) -> Mode {
    match rng.u8(0..8) {
        0 => Mode::Status(500),
        1 => Mode::Statuses(vec![502, 503, 500]),
        2 => Mode::RetryAfter(503, "1".into()),
        3 => Mode::RetryAfter(429, "0".into()),
        4 => Mode::ResetMidBody,
        5 => Mode::Body(r#"[{"id":1,"name":"trunc"#),
        6 => Mode::Drip(Duration::from_millis(40)),
        _ => Mode::Refused,
    }
}

#[derive(Default)]
struct Tally {
    events: AtomicUsize,
    changes: AtomicUsize,
    status: AtomicUsize,
    snapshots: AtomicUsize,
    resumes: AtomicUsize,
    cuts_after_status: AtomicUsize,
    faults: AtomicUsize,
    mutations: AtomicUsize,
}

fn parse_id(id: &str) -> Option<(String, u64)> {
    let (epoch, seq) = id.rsplit_once(':')?;
    Some((epoch.to_owned(), seq.parse().ok()?))
}

/// One subscriber: connects, reads, checks, cuts at random, resumes.
async fn subscriber(
    n: usize,
    base: String,
    seed: u64,
    models: Arc<Mutex<Vec<BTreeMap<String, Value>>>>,
    tally: Arc<Tally>,
    calm: CancellationToken,
    stop: CancellationToken,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model: BTreeMap<String, Value> = BTreeMap::new();
    let mut last: Option<String> = None;
    while !stop.is_cancelled() {
        let resumed = last.clone();
        let mut s = match &resumed {
            Some(id) if rng.bool() => Sse::connect_with(&base, &[("last-event-id", id)]).await,
            Some(id) => {
                let q: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
                Sse::connect(&format!("{base}?lastEventId={q}")).await
            }
            None => Sse::connect(&base).await,
        };
        assert_eq!(s.status, 200, "subscriber {n}: stream refused");
        if resumed.is_some() {
            tally.resumes.fetch_add(1, Ordering::Relaxed);
        }
        let mut first = true;
        loop {
            let e = tokio::select! {
                e = s.next() => e,
                () = stop.cancelled() => return,
            };
            tally.events.fetch_add(1, Ordering::Relaxed);
            let id = parse_id(&e.id);
            let prev = last.as_deref().and_then(parse_id);
            let ctx = || format!("subscriber {n}: {} {} after {last:?}", e.event, e.id);
            match e.event.as_str() {
                "snapshot" => {
                    tally.snapshots.fetch_add(1, Ordering::Relaxed);
                    if let (Some(p), Some(i), true) = (&prev, &id, first && resumed.is_some()) {
                        assert_ne!(
                            p.0,
                            i.0,
                            "{}: a resume within one instance got a snapshot",
                            ctx()
                        );
                    }
                    assert!(
                        first || prev.as_ref().map(|p| &p.0) != id.as_ref().map(|i| &i.0),
                        "{}: a resync mid-stream",
                        ctx()
                    );
                    model = expected(&data(&e)["items"]);
                    last = Some(e.id.clone());
                }
                "added" | "updated" | "removed" => {
                    tally.changes.fetch_add(1, Ordering::Relaxed);
                    let (p, i) = (
                        prev.clone().expect("a change before any position"),
                        id.clone().expect("id"),
                    );
                    assert_eq!(p.0, i.0, "{}: epoch changed without a snapshot", ctx());
                    assert_eq!(i.1, p.1 + 1, "{}: gap or duplicate", ctx());
                    let d = data(&e);
                    let key = key_of(&d["id"]).expect("event id is a string or number");
                    match e.event.as_str() {
                        "added" => {
                            let had = model.insert(key.clone(), d["item"].clone());
                            assert!(had.is_none(), "{}: added an id it has", ctx());
                        }
                        "updated" => {
                            let mut doc = model
                                .get(&key)
                                .cloned()
                                .unwrap_or_else(|| panic!("{}: updated an unknown id", ctx()));
                            let patch: json_patch::Patch =
                                serde_json::from_str(&d["patch"].to_string()).expect("patch");
                            json_patch::patch(&mut doc, &patch).unwrap_or_else(|err| {
                                panic!("{}: patch does not apply: {err}", ctx())
                            });
                            assert_eq!(doc, d["item"], "{}: previous + patch != item", ctx());
                            model.insert(key, doc);
                        }
                        _ => {
                            assert!(
                                model.remove(&key).is_some(),
                                "{}: removed an unknown id",
                                ctx()
                            );
                        }
                    }
                    last = Some(e.id.clone());
                }
                "stale" | "recovered" => {
                    tally.status.fetch_add(1, Ordering::Relaxed);
                    if let (Some(p), Some(i)) = (&prev, &id) {
                        assert!(
                            p.0 != i.0 || i.1 <= p.1,
                            "{}: status id ahead of what was sent",
                            ctx()
                        );
                    }
                    if !e.id.is_empty() {
                        last = Some(e.id.clone());
                    }
                }
                other => panic!("subscriber {n}: unexpected event {other}"),
            }
            first = false;
            models.lock().unwrap()[n] = model.clone();
            if calm.is_cancelled() {
                continue;
            }
            let status = matches!(e.event.as_str(), "stale" | "recovered");
            let cut = if status {
                rng.u8(0..2) == 0
            } else {
                rng.u8(0..12) == 0
            };
            if cut {
                if status {
                    tally.cuts_after_status.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_upstream_random_faults_random_cuts_converge_exactly() {
    let secs = env_or("POLLCAST_MODEL_SECS", 6);
    let seed = env_or("POLLCAST_MODEL_SEED", 0x5eed_2026);
    let subs = env_or("POLLCAST_MODEL_SUBSCRIBERS", 8) as usize;
    let mut rng = fastrand::Rng::with_seed(seed);

    let up = TestUpstream::start().await;
    let mut list: Vec<Value> = (0..8).map(|i| item(&mut rng, json!(i))).collect();
    up.set("/api/jobs", Value::Array(list.clone()));
    let mut c = config(&up);
    c.feeds[0].interval = Duration::from_millis(40);
    c.feeds[0].backoff_max = Duration::from_millis(150);
    // Feeds outlive a moment with every subscriber away: resumes stay within
    // one instance, so any snapshot after a resume is a bug.
    c.feeds[0].linger = Duration::from_secs(60);
    c.upstream.timeout = Duration::from_millis(300);
    c.sse.history = 100_000;
    let pc = pollcast::start(c).await.expect("start");
    let base = format!("http://{}/sse/jobs", pc.addr);

    let models = Arc::new(Mutex::new(vec![BTreeMap::new(); subs]));
    let tally = Arc::new(Tally::default());
    let (calm, stop) = (CancellationToken::new(), CancellationToken::new());
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..subs {
        tasks.spawn(subscriber(
            n,
            base.clone(),
            seed.wrapping_add(n as u64 + 1),
            models.clone(),
            tally.clone(),
            calm.clone(),
            stop.clone(),
        ));
    }

    // Churn: mutate every few polls, now and then hold a fault for a while.
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        for _ in 0..rng.u8(1..4) {
            mutate(&mut rng, &mut list);
            tally.mutations.fetch_add(1, Ordering::Relaxed);
        }
        up.set("/api/jobs", Value::Array(list.clone()));
        if rng.u8(0..6) == 0 {
            up.mode(fault(&mut rng));
            tally.faults.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(rng.u64(60..300))).await;
            up.mode(Mode::Ok);
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..120))).await;
        if let Some(Err(e)) = tasks.try_join_next() {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    // Stable: no more faults or changes; every subscriber must converge on
    // exactly the upstream's list.
    up.mode(Mode::Ok);
    calm.cancel();
    let want = expected(&Value::Array(list.clone()));
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(Err(e)) = tasks.try_join_next() {
                std::panic::resume_unwind(e.into_panic());
            }
            if models.lock().unwrap().iter().all(|m| *m == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if converged.is_err() {
        let models = models.lock().unwrap();
        for (n, m) in models.iter().enumerate().filter(|(_, m)| **m != want) {
            let missing: Vec<_> = want.keys().filter(|k| !m.contains_key(*k)).collect();
            let extra: Vec<_> = m.keys().filter(|k| !want.contains_key(*k)).collect();
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| m.get(*k).is_some_and(|w| w != *v))
                .map(|(k, _)| k)
                .collect();
            eprintln!("subscriber {n}: missing {missing:?}, extra {extra:?}, differing {differ:?}");
        }
        panic!("subscribers did not converge on the upstream's list");
    }
    stop.cancel();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let t = &tally;
    let line = format!(
        "model: seed {seed:#x}, {secs} s, {subs} subscribers: {} events ({} changes, {} status, {} snapshots), {} resumes ({} right after a status event), {} upstream mutations, {} faults",
        t.events.load(Ordering::Relaxed),
        t.changes.load(Ordering::Relaxed),
        t.status.load(Ordering::Relaxed),
        t.snapshots.load(Ordering::Relaxed),
        t.resumes.load(Ordering::Relaxed),
        t.cuts_after_status.load(Ordering::Relaxed),
        t.mutations.load(Ordering::Relaxed),
        t.faults.load(Ordering::Relaxed),
    );
    println!("{line}");
    // The run must have covered what it claims to.
    assert!(t.resumes.load(Ordering::Relaxed) > 0, "{line}");
    assert!(t.status.load(Ordering::Relaxed) > 0, "{line}");
    assert!(t.changes.load(Ordering::Relaxed) > 0, "{line}");
    pc.stop().await;
}
