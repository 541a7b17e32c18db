//! `pollcast init` as a user runs it: the real binary reads OpenAPI 3.1
//! (FastAPI-style JSON), 3.0 (YAML) and Swagger 2.0 documents from files or
//! a loopback URL, or probes a loopback API, and every config it writes
//! passes `pollcast --check`; the probe's config then streams.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use pollcast::config::{AuthMode, Config, FeedConfig};
use serde_json::json;

mod common;
use common::child::Pollcast;
use common::{data, Sse, TestUpstream};

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/openapi/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn pollcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pollcast"))
        .args(args)
        .env_remove("POLLCAST_CONFIG")
        .output()
        .expect("run pollcast")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `pollcast init <args> --out <dir>/config.toml`; the written path.
fn init(dir: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("config.toml");
    let mut all = vec!["init"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().expect("utf-8 path")]);
    let o = pollcast(&all);
    assert!(o.status.success(), "init failed: {}", stderr(&o));
    assert!(stderr(&o).contains("wrote "), "{}", stderr(&o));
    out
}

/// `pollcast --check` accepts the file as written; the parsed config.
fn checked(path: &Path) -> Config {
    let o = pollcast(&["--check", "--config", path.to_str().expect("path")]);
    assert!(
        o.status.success(),
        "--check refused the generated config: {}\n{}",
        stderr(&o),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    Config::load(path).expect("loads")
}

fn feed<'a>(c: &'a Config, name: &str) -> &'a FeedConfig {
    c.feeds
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no feed {name}: {:?}", names(c)))
}

fn names(c: &Config) -> Vec<&str> {
    c.feeds.iter().map(|f| f.name.as_str()).collect()
}

fn query(f: &FeedConfig) -> Option<Vec<&str>> {
    f.query
        .as_ref()
        .map(|q| q.iter().map(String::as_str).collect())
}

#[test]
fn a_fastapi_3_1_document_gives_one_feed_per_list_endpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let doc = fixture("dealbrain_fastapi_3.1.json");
    let path = init(
        dir.path(),
        &["--openapi", &doc, "--upstream", "http://127.0.0.1:8000"],
    );
    let c = checked(&path);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:8000");
    // A single object, an event stream and a health object are not lists.
    assert_eq!(
        names(&c),
        [
            "list_import_jobs",
            "list_listings",
            "list_listing_ports",
            "list_rules"
        ]
    );
    let listings = feed(&c, "list_listings");
    assert_eq!(listings.poll, "/api/v1/listings");
    assert_eq!(listings.sse_path(), "/sse/list_listings");
    assert_eq!(listings.items.as_str(), "");
    assert_eq!(listings.id.as_str(), "/id");
    assert_eq!(
        query(listings),
        Some(vec!["limit", "offset", "search", "form_factor"])
    );
    // HTTPBearer: the subscriber's Authorization goes with its polls.
    assert_eq!(listings.auth, AuthMode::Forward);
    assert!(listings.token_param.is_none());
    // A wrapped page: items under `items`, the id a required `*_id`.
    let imports = feed(&c, "list_import_jobs");
    assert_eq!(imports.items.as_str(), "/items");
    assert_eq!(imports.id.as_str(), "/import_job_id");
    assert_eq!(query(imports), Some(vec!["status", "page"]));
    // Path parameters in both poll and sse; the parent's id is not the item's.
    let ports = feed(&c, "list_listing_ports");
    assert_eq!(ports.poll, "/api/v1/listings/{listing_id}/ports");
    assert_eq!(ports.sse_path(), "/sse/list_listing_ports/{listing_id}");
    assert_eq!(ports.id.as_str(), "/port_id");
    assert_eq!(query(ports), Some(vec![]));
    // No id: the default stays, with a TODO saying why.
    let rules = feed(&c, "list_rules");
    assert_eq!(rules.id.as_str(), "/id");
    let rules_block = &text[text.find("GET /api/v1/rulesets").expect("rules comment")..];
    assert!(
        rules_block.contains("# TODO: which field identifies an item?"),
        "{text}"
    );
    // Writes at or under a list's path are its write-through triggers.
    let listings_block = &text[text.find("# GET /api/v1/listings (").expect("c")..];
    let listings_block = &listings_block[..listings_block.find("[[feeds]]").expect("f")];
    for w in [
        "POST /api/v1/listings",
        "PATCH /api/v1/listings/{listing_id}",
        "DELETE /api/v1/listings/{listing_id}",
        "PUT /api/v1/listings/{listing_id}/ports",
    ] {
        assert!(
            listings_block.contains(&format!("#   {w}\n")),
            "{w}: {text}"
        );
    }
    assert!(
        text.contains("#   GET /api/v1/events: no JSON success response"),
        "{text}"
    );
    assert!(
        text.contains("#   GET /health: the response is an object without an array"),
        "{text}"
    );
}

#[test]
fn a_3_0_yaml_document_with_cookie_security_and_a_base_path() {
    let dir = tempfile::tempdir().expect("dir");
    let path = init(dir.path(), &["--openapi", &fixture("jobs_3.0.yaml")]);
    let c = checked(&path);
    let text = std::fs::read_to_string(&path).expect("read");
    // servers[0] with its variable filled in; the base path goes into poll.
    assert_eq!(c.upstream.url.to_string(), "http://127.0.0.1:3000");
    assert_eq!(names(&c), ["listJobs", "jobLogs", "tags"]);
    let jobs = feed(&c, "listJobs");
    assert_eq!(jobs.poll, "/api/jobs");
    // $ref'd response and parameters; `data` wraps the list; allOf item with `uuid`.
    assert_eq!(jobs.items.as_str(), "/data");
    assert_eq!(jobs.id.as_str(), "/uuid");
    assert_eq!(query(jobs), Some(vec!["status", "cursor"]));
    assert_eq!(jobs.auth, AuthMode::Forward);
    assert!(
        text.contains("# GET /api/jobs (operationId listJobs)"),
        "{text}"
    );
    assert!(
        text.contains("Security `cookieAuth` (cookie `session`)"),
        "{text}"
    );
    assert!(
        text.contains("#   POST /api/jobs\n#   DELETE /api/jobs/{jobId}\n"),
        "{text}"
    );
    // Path-level parameter, the only array property, no id field.
    let logs = feed(&c, "jobLogs");
    assert_eq!(logs.poll, "/api/jobs/{jobId}/logs");
    assert_eq!(logs.sse_path(), "/sse/jobLogs/{jobId}");
    assert_eq!(logs.items.as_str(), "/lines");
    assert!(
        text.contains("TODO: which field identifies an item? (No `id`"),
        "{text}"
    );
    // `results` wraps the list; a required `key` is the id; `security: []`.
    let tags = feed(&c, "tags");
    assert_eq!(tags.items.as_str(), "/results");
    assert_eq!(tags.id.as_str(), "/key");
    assert!(text.contains("declares no security here"), "{text}");
}

#[test]
fn a_swagger_2_0_document_with_an_api_key_in_the_query() {
    let dir = tempfile::tempdir().expect("dir");
    let path = init(
        dir.path(),
        &["--openapi", &fixture("petstore_swagger_2.0.json")],
    );
    let c = checked(&path);
    assert_eq!(c.upstream.url.to_string(), "http://localhost:5000");
    assert_eq!(names(&c), ["findPets", "storeOrders"]);
    let pets = feed(&c, "findPets");
    assert_eq!(pets.poll, "/v2/pets");
    assert_eq!(pets.id.as_str(), "/id");
    // The key travels as token_param, so it is not also a plain parameter.
    assert_eq!(pets.token_param.as_deref(), Some("api_key"));
    assert_eq!(query(pets), Some(vec!["status"]));
    let orders = feed(&c, "storeOrders");
    assert_eq!(orders.poll, "/v2/stores/{storeId}/orders");
    assert_eq!(orders.sse_path(), "/sse/storeOrders/{storeId}");
    assert_eq!(orders.items.as_str(), "/results");
    assert_eq!(orders.id.as_str(), "/order_id");
    assert!(orders.token_param.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_at_a_url_is_read_with_one_get() {
    let api = TestUpstream::start().await;
    let doc = std::fs::read(fixture("dealbrain_fastapi_3.1.json")).expect("fixture");
    api.set_raw(
        "/openapi.json",
        &[("content-type", "application/json")],
        Bytes::from(doc),
    );
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("http://{}/openapi.json", api.addr);
    let d = dir.path().to_owned();
    let path = tokio::task::spawn_blocking(move || init(&d, &["--openapi", &url]))
        .await
        .expect("join");
    let c = checked(&path);
    // FastAPI names no server: the API is where the document came from.
    assert_eq!(c.upstream.url.to_string(), format!("http://{}", api.addr));
    assert_eq!(c.feeds.len(), 4);
    let seen = api.seen("/");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path_and_query, "/openapi.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_only_gets_and_its_config_streams() {
    let api = TestUpstream::start().await;
    api.set(
        "/api/jobs",
        json!([{"id": 1, "state": "queued"}, {"id": 2, "state": "done"}]),
    );
    api.set(
        "/api/orders",
        json!({"total": 1, "data": [{"order_id": "o-1", "user_id": "u", "qty": 2}]}),
    );
    api.set("/api/me", json!({"name": "ada"}));
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("http://{}", api.addr);
    let d = dir.path().to_owned();
    let path = tokio::task::spawn_blocking(move || {
        init(
            &d,
            &[
                "--probe",
                &url,
                "/api/jobs",
                "/api/orders?status=open",
                "/api/me",
                "/api/missing",
            ],
        )
    })
    .await
    .expect("join");
    let seen = api.seen("/");
    assert_eq!(seen.len(), 4, "one GET per path: {seen:?}");
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:?}");
    let c = checked(&path);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(c.upstream.url.to_string(), format!("http://{}", api.addr));
    assert_eq!(names(&c), ["jobs", "orders"]);
    assert_eq!(feed(&c, "jobs").id.as_str(), "/id");
    let orders = feed(&c, "orders");
    assert_eq!(orders.poll, "/api/orders");
    assert_eq!(orders.items.as_str(), "/data");
    assert_eq!(orders.id.as_str(), "/order_id");
    assert!(orders.query.is_none());
    assert!(
        text.contains("#   GET /api/me: the answer is an object without an array"),
        "{text}"
    );
    assert!(
        text.contains("#   GET /api/missing: answered 404"),
        "{text}"
    );

    // From the probe to a live stream, with the config as written.
    let p = path.to_str().expect("path").to_owned();
    let pc = Pollcast::spawn(
        &["--config", &p],
        &[("POLLCAST_SERVER_LISTEN", "127.0.0.1:0")],
    );
    let addr = pc.addr().await;
    let mut sse = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    let snap = sse.next_named("snapshot").await;
    assert_eq!(data(&snap)["items"].as_array().map(Vec::len), Some(2));
    api.set(
        "/api/jobs",
        json!([{"id": 1, "state": "queued"}, {"id": 2, "state": "done"}, {"id": 3, "state": "new"}]),
    );
    let added = sse.next_named("added").await;
    assert_eq!(data(&added)["id"], json!(3));
    assert!(api.seen("/").iter().all(|s| s.method == "GET"));
    pc.stop().await;
}

#[test]
fn an_existing_file_is_kept_unless_forced() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("config.toml");
    std::fs::write(&out, "# mine\n").expect("write");
    let doc = fixture("petstore_swagger_2.0.json");
    let args = [
        "init",
        "--openapi",
        &doc,
        "--out",
        out.to_str().expect("path"),
    ];
    let o = pollcast(&args);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("exists; pass --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "# mine\n");
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = pollcast(&forced);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&out)
        .expect("read")
        .contains("name = \"findPets\""));
}

/// `init` on a document with this text fails; its stderr. Nothing is written.
fn refused(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let doc = dir.path().join(name);
    std::fs::write(&doc, text).expect("write");
    let out = dir.path().join("config.toml");
    let o = pollcast(&[
        "init",
        "--openapi",
        doc.to_str().expect("path"),
        "--out",
        out.to_str().expect("path"),
    ]);
    assert!(!o.status.success());
    assert!(!out.exists());
    stderr(&o).replace(doc.to_str().expect("path"), name)
}

#[test]
fn an_unreadable_document_is_refused_naming_the_place_and_why() {
    let broken_ref = json!({
        "openapi": "3.1.0",
        "paths": {"/items": {"get": {"responses": {"200": {"description": "ok",
            "content": {"application/json": {"schema": {"type": "array",
                "items": {"$ref": "#/components/schemas/Item"}}}}}}}}}
    });
    let e = refused("api.json", &broken_ref.to_string());
    assert!(
        e.contains("api.json: #/paths/~1items/get/responses/200/content/application~1json/schema/items: `$ref: #/components/schemas/Item` does not resolve"),
        "{e}"
    );
    let e = refused("api.yaml", "openapi: 3.0.0\npaths:\n  /a: {get: [\n");
    assert!(
        e.contains("api.yaml:") && e.contains("not valid YAML"),
        "{e}"
    );
    let e = refused("api.json", "{\"openapi\": \"3.0.0\",\n \"paths\": {,}}");
    assert!(
        e.contains("api.json:2:") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = refused("api.json", "{\"info\": {}}");
    assert!(e.contains("api.json: #: not an OpenAPI document"), "{e}");
    let e = refused("api.json", "{\"openapi\": \"4.0\", \"paths\": {}}");
    assert!(e.contains("api.json: #/openapi: OpenAPI version"), "{e}");
    let e = refused(
        "api.json",
        &json!({"swagger": "2.0", "paths": {"/x": {"get": {"security": [{"key": []}],
            "responses": {"200": {"description": "ok", "schema": {"type": "array", "items": {}}}}}}}})
        .to_string(),
    );
    assert!(
        e.contains(
            "api.json: #/paths/~1x/get/security/0/key: security scheme `key` is not defined"
        ),
        "{e}"
    );
    let e = refused(
        "api.json",
        &json!({"openapi": "3.0.0", "paths": {"/health": {"get": {"responses": {"200": {"description": "ok"}}}}}})
            .to_string(),
    );
    assert!(
        e.contains("no list endpoint found") && e.contains("GET /health"),
        "{e}"
    );
    let o = pollcast(&[
        "init",
        "--openapi",
        "/nonexistent/openapi.json",
        "--out",
        "-",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read /nonexistent/openapi.json"),
        "{}",
        stderr(&o)
    );
}

/// The FastAPI app of tests/fastapi/listings.py on an ephemeral port, killed
/// when dropped. `None` (the test skips, saying why) when python3 with
/// fastapi and uvicorn is missing outside CI; in CI (`CI=true`, which
/// `.ci/run` sets after installing them) a missing tool fails the test.
struct FastApi {
    child: std::process::Child,
    port: u16,
}

impl FastApi {
    fn start() -> Option<Self> {
        use std::io::BufRead;
        let have = Command::new("python3")
            .args(["-c", "import fastapi, uvicorn"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("python3 with fastapi and uvicorn is missing; .ci/run installs them");
            }
            eprintln!("skipped: python3 with fastapi and uvicorn (pip install fastapi uvicorn)");
            return None;
        }
        let mut child = Command::new("python3")
            .arg(format!(
                "{}/tests/fastapi/listings.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the FastAPI app");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the app's port line");
        let port = line
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Some(Self { child, port })
    }
}

impl Drop for FastApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_real_fastapi_document_to_a_live_stream() {
    let Some(app) = tokio::task::spawn_blocking(FastApi::start)
        .await
        .expect("join")
    else {
        return;
    };
    let api = format!("http://127.0.0.1:{}", app.port);
    // The socket listens before the port is printed, so this connects; the
    // document is served once uvicorn's loop runs (the fetch waits for it).
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().to_owned();
    let doc = format!("{api}/openapi.json");
    let path = tokio::task::spawn_blocking(move || init(&d, &["--openapi", &doc]))
        .await
        .expect("join");
    let c = checked(&path);
    eprintln!("{}", std::fs::read_to_string(&path).expect("read"));
    assert_eq!(c.upstream.url.to_string(), api);
    assert_eq!(names(&c), ["list_listings"]);
    let f = feed(&c, "list_listings");
    assert_eq!(f.poll, "/api/v1/listings");
    assert_eq!(f.id.as_str(), "/id");
    assert_eq!(f.items.as_str(), "");
    assert_eq!(query(f), Some(vec!["limit", "offset", "form_factor"]));

    let p = path.to_str().expect("path").to_owned();
    let pc = Pollcast::spawn(
        &["--config", &p],
        &[("POLLCAST_SERVER_LISTEN", "127.0.0.1:0")],
    );
    let addr = pc.addr().await;
    let mut sse = Sse::connect(&format!("http://{addr}/sse/list_listings")).await;
    let snap = sse.next_named("snapshot").await;
    assert_eq!(data(&snap)["items"].as_array().map(Vec::len), Some(2));
    // Writes go through pollcast to the app (and refresh the feed at once).
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/api/v1/listings");
    let created = http
        .post(&base)
        .json(&json!({"title": "NUC 13 Pro", "price_usd": 389.0, "form_factor": "mini"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status().as_u16(), 201);
    let added = sse.next_named("added").await;
    assert_eq!(data(&added)["item"]["title"], json!("NUC 13 Pro"));
    let id = data(&added)["id"].clone();
    let patched = http
        .patch(format!("{base}/{id}"))
        .json(&json!({"price_usd": 359.0}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status().as_u16(), 200);
    let updated = sse.next_named("updated").await;
    assert_eq!(data(&updated)["id"], id);
    assert_eq!(data(&updated)["item"]["price_usd"], json!(359.0));
    let deleted = http
        .delete(format!("{base}/1"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 204);
    let removed = sse.next_named("removed").await;
    assert_eq!(data(&removed)["id"], json!(1));
    pc.stop().await;
    drop(app);
}

#[test]
fn init_is_a_subcommand_beside_the_existing_flags() {
    // Top-level flags and the subcommand do not mix (usage error, exit 2)...
    let doc = fixture("jobs_3.0.yaml");
    let o = pollcast(&["--check", "init", "--openapi", &doc, "--out", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // ...paths belong to --probe...
    let o = pollcast(&["init", "--openapi", &doc, "/api/jobs", "--out", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // ...and `--out -` prints the config instead of writing a file.
    let o = Command::new(env!("CARGO_BIN_EXE_pollcast"))
        .args(["init", "--openapi", &doc, "--out", "-"])
        .env("POLLCAST_CONFIG", "/nonexistent/ignored.toml")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("[[feeds]]\nname = \"listJobs\""), "{text}");
    assert!(stderr(&o).contains("standard output"), "{}", stderr(&o));
}
