//! Poll processing throughput: extract + diff + encode of one upstream body
//! against the previous one, in MB/s of upstream body.
//!
//! Bodies are `{"generated_at":..,"items":[...]}` with items of about 1 KiB
//! (nested object, arrays, numbers, escaped strings), as a list endpoint of a
//! real API returns them. Churn is the share of items whose content changed
//! since the previous poll. At 0% the envelope still changes (a timestamp), so
//! the whole body is read: the byte-identical case is measured separately.
//!
//! Run: `cargo bench --bench diff` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pollcast::config::FeedConfig;
use pollcast::feed::contract::{Contract, Render};
use pollcast::feed::extract::extract;
use pollcast::feed::update::prepare;
use pollcast::pointer::Pointer;

/// One item of about 1 KiB; `version` changes its content.
fn item(id: usize, version: usize) -> String {
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(8);
    format!(
        concat!(
            r#"{{"id":{id},"name":"job-{id}","status":"{status}","version":{version},"#,
            r#""owner":{{"id":{owner},"login":"user{owner}","email":"user{owner}@example.org"}},"#,
            r#""tags":["batch","nightly","prio-{prio}"],"progress":{progress},"#,
            r#""created_at":"2026-11-23T10:00:00Z","updated_at":"2026-11-23T10:{min:02}:00Z","#,
            r#""note":"line one\nline \"two\" \u00e9","description":"{filler}"}}"#
        ),
        id = id,
        status = if version % 2 == 0 {
            "running"
        } else {
            "queued"
        },
        version = version,
        owner = id % 97,
        prio = id % 5,
        progress = (id * 7 + version) % 100,
        min = version % 60,
        filler = filler,
    )
}

/// A body of `n` items where the first `changed` items are at version 1.
fn body(n: usize, changed: usize, generation: u64) -> Bytes {
    let mut s = format!(r#"{{"generated_at":{generation},"items":["#);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        // Spread changed items over the list, as churn is in practice.
        let v = usize::from(
            changed > 0
                && i % (n / changed.max(1)).max(1) == 0
                && i / (n / changed.max(1)).max(1) < changed,
        );
        s.push_str(&item(i, v));
    }
    s.push_str("]}");
    Bytes::from(s)
}

fn def() -> FeedConfig {
    let mut d = FeedConfig::new("bench", "/api/jobs");
    d.items = Pointer::parse("/items").expect("pointer");
    d
}

fn poll_processing(c: &mut Criterion) {
    let def = def();
    // The default contract, as a feed of this definition renders it.
    let render = Render::new(
        Contract::compile(&def).expect("the default contract compiles"),
        &def.name,
        &[],
    );
    let mut g = c.benchmark_group("poll");
    for n in [1_000usize, 10_000] {
        let old = body(n, 0, 1);
        let (old_list, _) = extract(old.clone(), &def.items, &def.id).expect("old");
        let prev = (old.clone(), Arc::new(old_list));
        for (label, changed) in [("0%", 0usize), ("1%", n / 100), ("100%", n)] {
            let new = body(n, changed, 2);
            let events = prepare(&def, &render, Some(&prev), new.clone())
                .expect("ok")
                .expect("changed body")
                .len();
            assert_eq!(events, changed, "{n} items at {label}");
            g.throughput(Throughput::BytesDecimal(new.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("churn {label}"), n),
                &new,
                |b, new| {
                    b.iter(|| {
                        let u = prepare(&def, &render, Some(&prev), new.clone())
                            .expect("ok")
                            .expect("changed");
                        black_box(u.encode(1, |seq| format!("0123456789ab:{seq}")))
                    })
                },
            );
        }
        g.throughput(Throughput::BytesDecimal(old.len() as u64));
        g.bench_with_input(BenchmarkId::new("identical body", n), &old, |b, same| {
            b.iter(|| {
                black_box(
                    prepare(&def, &render, Some(&prev), same.clone())
                        .expect("ok")
                        .is_none(),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = poll_processing
}
criterion_main!(benches);
