use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:3000"
timeout = "5s"

[[feeds]]
name = "jobs"
poll = "/api/jobs"
sse = "/sse/jobs"
interval = "1s"
id = "/id"
items = ""
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("t.toml"))
}

#[test]
fn the_documented_example_parses_with_defaults() {
    let c = parse(GOOD).expect("valid");
    assert_eq!(c.upstream.timeout, Duration::from_secs(5));
    assert_eq!(c.feeds[0].interval, Duration::from_secs(1));
    assert_eq!(c.feeds[0].linger, Duration::from_secs(10));
    assert_eq!(c.sse.keepalive, Duration::from_secs(15));
    assert_eq!(c.upstream.url.origin, "http://127.0.0.1:3000");
}

#[test]
fn sse_path_defaults_from_name() {
    let c = parse("[upstream]\nurl='http://a:1'\n[[feeds]]\nname='x'\npoll='/x'\n").expect("ok");
    assert_eq!(c.feeds[0].sse_path(), "/sse/x");
}

#[test]
fn unknown_key_names_line_and_key() {
    let bad = GOOD.replace("interval = \"1s\"", "intervall = \"1s\"");
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:13:1:"), "{e}");
    assert!(e.contains("feeds[0].intervall"), "{e}");
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn bad_duration_names_line_and_key() {
    let bad = GOOD.replace("timeout = \"5s\"", "timeout = \"five\"");
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:7:"), "{e}");
    assert!(e.contains("upstream.timeout"), "{e}");
}

#[test]
fn shared_sse_path_is_allowed_but_not_with_terminal() {
    let shared =
        format!("{GOOD}\n[[feeds]]\nname = \"other\"\npoll = \"/x\"\nsse = \"/sse/jobs\"\n");
    assert!(parse(&shared).is_ok());
    let bad = format!(
        "{shared}object = true\nterminal = {{ field = \"/status\", values = {{ done = {{}} }} }}\n"
    );
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:20:1: feeds[1].sse:"), "{e}");
}

#[test]
fn feeds_sharing_a_stream_must_agree_on_connect_and_keepalive() {
    let shared =
        format!("{GOOD}\n[[feeds]]\nname = \"other\"\npoll = \"/x\"\nsse = \"/sse/jobs\"\n");
    for key in ["connect", "keepalive"] {
        let bad = format!("{shared}events.{key} = {{ event = \"hello\" }}\n");
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:"), "{e}");
        assert!(e.contains(&format!("feeds[1].events.{key}")), "{e}");
        assert!(e.contains("`jobs`") && e.contains("`other`"), "{e}");
    }
}

#[test]
fn bad_pointer_is_rejected() {
    let bad = GOOD.replace("id = \"/id\"", "id = \"id\"");
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("feeds[0].id"), "{e}");
    assert!(e.contains("JSON Pointer"), "{e}");
}

#[test]
fn https_upstream_is_explained() {
    let bad = GOOD.replace("http://127", "https://127");
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("upstream.url") && e.contains("https"), "{e}");
}

#[test]
fn pass_through_keys_default_off_and_parse() {
    let c = parse(GOOD).expect("ok");
    assert!(!c.upstream.preserve_host && !c.upstream.forwarded);
    assert!(c.upstream.trusted_proxies.is_empty());
    let on = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\npreserve_host = true\nforwarded = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        );
    let c = parse(&on).expect("ok");
    assert!(c.upstream.preserve_host && c.upstream.forwarded);
    assert_eq!(c.upstream.trusted_proxies.len(), 2);
}

#[test]
fn bad_trusted_proxies_are_located() {
    let garbage = GOOD.replace(
        "timeout = \"5s\"",
        "timeout = \"5s\"\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]",
    );
    let e = Config::from_toml(&garbage, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:8:"), "{e}");
    assert!(
        e.contains("upstream.trusted_proxies") && e.contains("lb.internal"),
        "{e}"
    );

    let sloppy = GOOD.replace(
        "timeout = \"5s\"",
        "timeout = \"5s\"\ntrusted_proxies = [\"10.1.2.3/8\"]",
    );
    let e = Config::from_toml(&sloppy, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:8:"), "{e}");
    assert!(e.contains("upstream.trusted_proxies:"), "{e}");
    assert!(e.contains("10.0.0.0/8"), "{e}");
}

#[test]
fn env_overrides_apply_and_report_bad_values() {
    let mut c = parse(GOOD).expect("ok");
    c.apply_env(|k| (k == "POLLCAST_UPSTREAM_URL").then(|| "http://10.0.0.1:9000/v1".into()))
        .expect("ok");
    assert_eq!(c.upstream.url.to_string(), "http://10.0.0.1:9000/v1");
    let e = c
        .apply_env(|k| (k == "POLLCAST_SERVER_LISTEN").then(|| "nope".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("POLLCAST_SERVER_LISTEN"), "{e}");
}
const SECURE: &str = r#"
[server]
header_read_timeout = "3s"
max_header_size = 16384

[upstream]
url = "http://127.0.0.1:3000"

[limits]
max_feeds = 10
max_feeds_per_definition = 5
max_subscribers = 100
max_subscribers_per_client = 4
retry_after = "2s"

[cors]
allowed_origins = ["https://app.example.com"]
allow_credentials = true

[[feeds]]
name = "jobs"
poll = "/api/jobs"
token_param = "token"
query = ["status", "limit"]

[[feeds]]
name = "shared"
poll = "/api/shared"
auth = "check"
check = "/api/me"
check_method = "HEAD"
recheck = "5s"
credentials_env = "POLLCAST_TEST_SHARED_AUTH"
query = []
"#;

fn parse_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
    c.resolve_credentials(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .map_err(|p| format!("{}: {}", p.key_path(), p.message))?;
    c.validate()
        .map_err(|p| format!("{}: {}", p.key_path(), p.message))?;
    Ok(c)
}

#[test]
fn security_keys_parse_and_the_secret_is_never_printed() {
    let c = parse_with_env(SECURE, &[("POLLCAST_TEST_SHARED_AUTH", "Bearer topsecret")])
        .expect("valid");
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(3));
    assert_eq!(c.server.max_header_size, 16384);
    assert_eq!(c.limits.max_subscribers_per_client, 4);
    assert_eq!(c.feeds[0].auth, AuthMode::Forward);
    assert_eq!(
        c.feeds[0].query.as_deref(),
        Some(&["status".to_owned(), "limit".to_owned()][..])
    );
    assert_eq!(c.feeds[1].auth, AuthMode::Check);
    assert_eq!(c.feeds[1].check_method, CheckMethod::Head);
    assert_eq!(
        c.feeds[1].credentials.as_ref().map(|s| s.header().clone()),
        Some(http::HeaderValue::from_static("Bearer topsecret"))
    );
    let printed = format!("{c:?} {c:#?}");
    assert!(!printed.contains("topsecret"), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn security_defaults() {
    let c = parse("[upstream]\nurl='http://a:1'\n[[feeds]]\nname='x'\npoll='/x'\n").expect("ok");
    assert_eq!(c.feeds[0].auth, AuthMode::Forward);
    assert_eq!(c.feeds[0].query, None);
    assert_eq!(c.feeds[0].recheck, Duration::from_secs(30));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_header_size, 65536);
    assert_eq!(c.limits.max_feeds, 2000);
    assert_eq!(c.limits.max_feeds_per_definition, 1000);
    assert_eq!(c.limits.max_subscribers, 10_000);
    assert_eq!(c.limits.max_subscribers_per_client, 256);
    assert_eq!(c.limits.max_feeds_per_client, 64);
    assert_eq!(c.limits.max_feed_memory, 128 * 1024 * 1024);
    assert!(c.cors.allowed_origins.is_empty() && !c.cors.allow_credentials);
    // Operator endpoints on loopback only.
    assert_eq!(c.admin.listen, Some(DEFAULT_ADMIN_LISTEN));
    assert!(c.admin.listen.is_some_and(|a| a.ip().is_loopback()));
}

#[test]
fn admin_listen_takes_an_address_or_empty_for_the_main_listener() {
    let base = "[upstream]\nurl='http://a:1'\n[admin]\n";
    let c = parse(&format!("{base}listen = ''\n")).expect("empty");
    assert_eq!(c.admin.listen, None);
    let c = parse(&format!("{base}listen = '0.0.0.0:9091'\n")).expect("addr");
    assert_eq!(c.admin.listen, Some("0.0.0.0:9091".parse().expect("addr")));
    let e = parse(&format!("{base}listen = 'nine'\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.listen") && e.contains("`nine`"), "{e}");
    // Written back as it was read (`--check`).
    let text = toml::to_string(&c.admin).expect("toml");
    assert!(text.contains("listen = \"0.0.0.0:9091\""), "{text}");
    let mut none = c.admin.clone();
    none.listen = None;
    let text = toml::to_string(&none).expect("toml");
    assert!(text.contains("listen = \"\""), "{text}");
}

#[test]
fn a_missing_credentials_variable_names_the_variable() {
    let e = parse_with_env(SECURE, &[]).unwrap_err();
    assert!(e.starts_with("feeds[1].credentials_env"), "{e}");
    assert!(e.contains("POLLCAST_TEST_SHARED_AUTH"), "{e}");
}

#[test]
fn wildcard_origin_with_credentials_is_refused_with_its_line() {
    let bad = SECURE
        .replace("[\"https://app.example.com\"]", "[\"*\"]")
        .replace("credentials_env = \"POLLCAST_TEST_SHARED_AUTH\"\n", "");
    let e = Config::from_toml(&bad, Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:18:1: cors.allow_credentials:"), "{e}");
}

#[test]
fn a_check_path_may_use_the_sse_paths_parameters() {
    let env = [("POLLCAST_TEST_SHARED_AUTH", "Bearer x")];
    let text = SECURE
        .replace(
            "poll = \"/api/shared\"",
            "poll = \"/api/projects/{project}/jobs\"\nsse = \"/sse/projects/{project}/jobs\"",
        )
        .replace("check = \"/api/me\"", "check = \"/api/projects/{project}\"");
    let c = parse_with_env(&text, &env).expect("valid");
    assert_eq!(c.feeds[1].check.as_deref(), Some("/api/projects/{project}"));
    let e = parse_with_env(
        &text.replace("/api/projects/{project}\"", "/api/projects/{other}\""),
        &env,
    )
    .unwrap_err();
    assert!(
        e.starts_with("feeds[1].check: `{other}` is not a parameter"),
        "{e}"
    );
    // Service credentials and no allowlist: the error says why.
    let e = parse_with_env(&text.replace("query = []\n", ""), &env).unwrap_err();
    assert!(e.starts_with("feeds[1].query: is required"), "{e}");
    assert!(e.contains("service credentials"), "{e}");
}

#[test]
fn bad_security_values_are_refused() {
    let env = [("POLLCAST_TEST_SHARED_AUTH", "Bearer x")];
    for (from, to, key) in [
        (
            "max_header_size = 16384",
            "max_header_size = 1024",
            "server.max_header_size",
        ),
        (
            "retry_after = \"2s\"",
            "retry_after = \"10ms\"",
            "limits.retry_after",
        ),
        (
            "\"https://app.example.com\"",
            "\"https://app.example.com/path\"",
            "cors.allowed_origins",
        ),
        (
            "token_param = \"token\"",
            "token_param = \"lastEventId\"",
            "feeds[0].token_param",
        ),
        (
            "query = [\"status\", \"limit\"]",
            "query = [\"status\", \"token\"]",
            "feeds[0].query",
        ),
        (
            "query = [\"status\", \"limit\"]",
            "query = [\"a&b\"]",
            "feeds[0].query",
        ),
        ("auth = \"check\"", "auth = \"forward\"", "feeds[1].check"),
        (
            "check = \"/api/me\"",
            "check = \"api/me\"",
            "feeds[1].check",
        ),
        ("recheck = \"5s\"", "recheck = \"1ms\"", "feeds[1].recheck"),
        // Service credentials with check/none: an allowlist is required.
        ("query = []\n", "", "feeds[1].query"),
        // A check path names only the SSE path's parameters.
        (
            "check = \"/api/me\"",
            "check = \"/api/projects/{project}/me\"",
            "feeds[1].check",
        ),
    ] {
        let text = SECURE.replace(from, to);
        assert_ne!(text, SECURE, "{from}");
        let e = parse_with_env(&text, &env).unwrap_err();
        assert!(e.starts_with(key), "{to}: {e}");
    }
    let e = parse_with_env(
        &SECURE.replace("auth = \"check\"", "auth = \"maybe\""),
        &env,
    )
    .unwrap_err();
    assert!(e.contains("unknown variant"), "{e}");
    let forward = SECURE
        .replace("check = \"/api/me\"\n", "")
        .replace("auth = \"check\"", "auth = \"forward\"");
    let e = parse_with_env(&forward, &env).unwrap_err();
    assert!(e.starts_with("feeds[1].credentials_env"), "{e}");
    let none = SECURE.replace("query = [\"status\", \"limit\"]", "auth = \"none\"");
    let e = parse_with_env(&none, &env).unwrap_err();
    assert!(e.starts_with("feeds[0].token_param"), "{e}");
}

#[test]
fn adaptive_interval_keys_parse_and_default_to_absent() {
    let c = parse(GOOD).expect("ok");
    assert_eq!(
        (c.feeds[0].interval_min, c.feeds[0].interval_max),
        (None, None)
    );
    let on = GOOD.replace(
        "interval = \"1s\"",
        "interval = \"1s\"\ninterval_min = \"500ms\"\ninterval_max = \"30s\"",
    );
    let c = parse(&on).expect("ok");
    assert_eq!(c.feeds[0].interval_min, Some(Duration::from_millis(500)));
    assert_eq!(c.feeds[0].interval_max, Some(Duration::from_secs(30)));
    // Only one of them is fine too: the other bound is the interval.
    let only_max = GOOD.replace(
        "interval = \"1s\"",
        "interval = \"1s\"\ninterval_max = \"10s\"",
    );
    assert!(parse(&only_max).is_ok());
    // Round trip through the effective config (`--check`).
    let text = toml::to_string(&c.effective()).expect("toml");
    assert!(text.contains("interval_min = \"500ms\""), "{text}");
    let plain = toml::to_string(&parse(GOOD).expect("ok")).expect("toml");
    assert!(!plain.contains("interval_m"), "{plain}");
}

#[test]
fn adaptive_interval_rules_are_located() {
    for (keys, line, key, says) in [
        (
            "interval_min = \"5ms\"\ninterval = \"1s\"",
            13,
            "feeds[0].interval_min",
            "at least 10ms",
        ),
        (
            "interval_min = \"2s\"\ninterval = \"1s\"",
            13,
            "feeds[0].interval_min",
            "at most the interval (1s)",
        ),
        (
            "interval = \"1s\"\ninterval_max = \"500ms\"",
            14,
            "feeds[0].interval_max",
            "at least the interval (1s)",
        ),
        // backoff_max is not in the file: its table's header is named.
        (
            "interval = \"1s\"\ninterval_max = \"1m\"",
            9,
            "feeds[0].backoff_max",
            "at least interval_max (1m)",
        ),
        (
            "interval = \"1s\"\ninterval_max = \"never\"",
            14,
            "feeds[0].interval_max",
            "invalid",
        ),
    ] {
        let bad = GOOD.replace("interval = \"1s\"", keys);
        let e = Config::from_toml(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("c.toml:{line}:")), "{keys}: {e}");
        assert!(e.contains(key) && e.contains(says), "{keys}: {e}");
    }
    let ok = GOOD.replace(
        "interval = \"1s\"",
        "interval = \"1s\"\ninterval_max = \"1m\"\nbackoff_max = \"1m\"",
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn the_default_contract_names_are_valid_event_names() {
    use crate::feed::contract::*;
    for name in [SNAPSHOT, ADDED, UPDATED, REMOVED, STALE, RECOVERED] {
        assert!(valid_event_name(name), "{name}");
    }
}

#[test]
fn event_names_that_could_break_framing_are_invalid() {
    for ok in ["snapshot", "job_added", "listing.created", "a-b", "X1"] {
        assert!(valid_event_name(ok), "{ok}");
    }
    for bad in [
        "",
        "a b",
        "a\nb",
        "a\rb",
        "a:b",
        "é",
        "tab\t",
        &"x".repeat(129),
    ] {
        assert!(!valid_event_name(bad), "{bad:?}");
    }
}

#[test]
fn cluster_is_off_by_default_and_its_keys_have_defaults() {
    assert!(parse(GOOD).expect("valid").cluster.is_none());
    let text = format!("{GOOD}\n[cluster]\nredis = \"redis://r:6379\"\n");
    let mut c: Config = toml::from_str(&text).expect("toml");
    let cl = c.cluster.as_mut().expect("cluster");
    assert_eq!(cl.prefix, "pollcast:");
    assert_eq!(cl.lease, Duration::from_secs(3));
    assert_eq!(cl.timeout, Duration::from_millis(500));
    assert_eq!(cl.user_ttl, Duration::from_secs(600));
    let short = cl.clone().resolve_secret(|_| Some("short".into()));
    assert!(short.is_err_and(|p| p.message.contains(CLUSTER_SECRET_ENV)));
    cl.resolve_secret(|k| (k == CLUSTER_SECRET_ENV).then(|| "0123456789abcdef".into()))
        .expect("secret");
    assert_eq!(cl.secret_bytes(), b"0123456789abcdef");
    assert_eq!(format!("{:?}", cl.secret), "Some(<redacted>)");
    c.validate_with(&crate::validation::FEATURES)
        .expect("valid");
}

#[test]
fn cluster_values_are_validated_with_their_key() {
    let ok = ClusterConfig::new("redis://r:6379", b"0123456789abcdef");
    assert!(ok.validate().is_ok());
    let mut tls = ok.clone();
    tls.redis = "rediss://r:6380".into();
    assert!(tls.validate().is_ok());
    let bad = |f: fn(&mut ClusterConfig), key: &str| {
        let mut c = ok.clone();
        f(&mut c);
        let p = c.validate().expect_err("invalid");
        assert_eq!(p.key_path(), key, "{p:?}");
    };
    bad(|c| c.redis = "http://r:6379".into(), "cluster.redis");
    bad(|c| c.prefix = "a{b}".into(), "cluster.prefix");
    bad(|c| c.lease = Duration::from_millis(50), "cluster.lease");
    bad(|c| c.timeout = c.lease, "cluster.timeout");
    bad(|c| c.user_ttl = Duration::from_millis(100), "cluster.ttl");
}

#[test]
fn a_cluster_without_its_secret_fails_naming_file_line_and_variable() {
    if std::env::var_os(CLUSTER_SECRET_ENV).is_some() {
        return;
    }
    let text = format!("{GOOD}\n[cluster]\nredis = \"redis://r:6379\"\n");
    let e = parse(&text).expect_err("no secret").to_string();
    assert!(e.starts_with("t.toml:"), "{e}");
    assert!(
        e.contains("cluster.redis") && e.contains(CLUSTER_SECRET_ENV),
        "{e}"
    );
}
