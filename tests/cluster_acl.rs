//! The Redis of the Kubernetes cluster example
//! (`deploy/kustomize/overlays/cluster/redis.yaml`) runs with the default
//! user off and pollcast's own ACL user limited to its prefix and a list of
//! commands. This test starts a private `redis-server` with exactly the
//! arguments of that manifest and two replicas logging in as that user: if
//! pollcast ever needs a command the list lacks, the replicas fall back to
//! polling on their own and this test fails, before a cluster does.

mod common;

use std::process::{Child, Command, Stdio};

use common::cluster::*;
use common::redis::RedisServer;
use common::*;
use serde_json::json;

const MANIFEST: &str = "deploy/kustomize/overlays/cluster/redis.yaml";
const PASSWORD: &str = "test-password-for-the-acl-user";

/// The `args` of the manifest's redis container, with the password the
/// manifest takes from the Secret.
fn manifest_args() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST);
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("YAML");
        if v["kind"] != "Deployment" {
            continue;
        }
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        let args = c["args"].as_array().expect("args");
        return args
            .iter()
            .map(|a| {
                a.as_str()
                    .expect("string arg")
                    .replace("$(REDIS_PASSWORD)", PASSWORD)
            })
            .collect();
    }
    panic!("{MANIFEST} has no Deployment");
}

/// redis-server as the manifest runs it, on an ephemeral loopback port.
struct AclRedis {
    child: Child,
    port: u16,
}

impl AclRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(manifest_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let url = format!("redis://pollcast:{PASSWORD}@127.0.0.1:{port}/");
        common::redis::wait_answers(&url).await;
        Self { child, port }
    }
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_acl_user_is_enough_for_a_cluster() {
    // Skips (or fails under CI=true) where redis-server is missing.
    let Some(probe) = RedisServer::start_or_skip().await else {
        return;
    };
    drop(probe);
    let redis = AclRedis::start().await;

    // The ACL is in force: the default user is off.
    let anon = ::redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port).as_str())
        .expect("client");
    let refused = match anon.get_multiplexed_async_connection().await {
        Err(_) => true,
        Ok(mut c) => ::redis::cmd("GET")
            .arg("pollcast:x")
            .query_async::<Option<String>>(&mut c)
            .await
            .is_err(),
    };
    assert!(refused, "the default user must be off");

    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1, "s": "a"}]));
    let url = format!("redis://pollcast:{PASSWORD}@127.0.0.1:{}/", redis.port);
    let file = child_config_on(&up, &url, JOBS_EVERY_100MS, "300ms", "200ms");
    let pcs = spawn_replicas(2, &file).await;
    let mut sa = connect(&pcs[0], "/sse/jobs", &[]).await;
    let mut sb = connect(&pcs[1], "/sse/jobs", &[]).await;
    let (ea, eb) = (sa.next().await, sb.next().await);
    assert_eq!(ea.event, "snapshot");
    assert_eq!(
        (&ea.id, &ea.data),
        (&eb.id, &eb.data),
        "one snapshot, one id"
    );

    // A change reaches both through Redis: one leader published it with the
    // commands the ACL allows, the other followed it.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "a"}, {"id": 2, "s": "b"}]),
    );
    let (ea, eb) = (sa.next().await, sb.next().await);
    assert_eq!(ea.event, "added");
    assert_eq!(
        (&ea.event, &ea.id, &ea.data),
        (&eb.event, &eb.id, &eb.data),
        "byte-identical events"
    );
    // A resume on the other replica replays from the shared Stream.
    up.set(
        "/api/jobs",
        json!([{"id": 1, "s": "z"}, {"id": 2, "s": "b"}]),
    );
    let missed = sa.next().await;
    assert_eq!(missed.event, "updated");
    let mut r = connect(&pcs[1], "/sse/jobs", &[("Last-Event-ID", &ea.id)]).await;
    let replayed = r.next().await;
    assert_eq!((replayed.event, replayed.id), (missed.event, missed.id));

    // Neither replica ever lost Redis or had a write refused.
    for pc in &pcs {
        let m = scrape_metrics_at(pc.admin_addr().await).await;
        assert_eq!(must_series(&m, "pollcast_cluster_up"), 1.0, "{m}");
        assert_eq!(must_series(&m, "pollcast_cluster_fallbacks_total"), 0.0);
        assert_eq!(must_series(&m, "pollcast_cluster_rejected_total"), 0.0);
    }
    drop((sa, sb, r));
    for pc in pcs {
        assert!(pc.stop().await.success(), "a replica exits cleanly");
    }
}

#[test]
fn the_manifest_grants_what_the_docs_acl_line_grants() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/cluster.md")).expect("docs/cluster.md");
    let line = docs
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER pollcast"))
        .expect("the ACL line in docs/cluster.md");
    let rules = |words: Vec<String>| {
        let mut r: Vec<String> = words
            .into_iter()
            .filter(|w| w.starts_with(['+', '-', '~', '&']) && !w.starts_with("--"))
            .collect();
        r.sort();
        r
    };
    let documented = rules(line.split_whitespace().map(str::to_owned).collect());
    let manifest = rules(manifest_args());
    assert_eq!(
        manifest, documented,
        "{MANIFEST} and docs/cluster.md grant the same"
    );
}
