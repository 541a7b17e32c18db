use super::*;
use std::path::Path;

fn hv(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

#[test]
fn if_none_match_compares_weakly_and_reads_lists() {
    let ours = b"\"abc\"";
    assert!(etag_matches(b"\"abc\"", ours));
    assert!(etag_matches(b"W/\"abc\"", ours));
    assert!(etag_matches(b"\"x\", W/\"abc\"", ours));
    assert!(etag_matches(b"*", ours));
    assert!(etag_matches(b"\"a,b\", \"abc\"", ours));
    assert!(etag_matches(b"\"abc\"", b"W/\"abc\""));
    assert!(!etag_matches(b"\"abcd\"", ours));
    assert!(!etag_matches(b"abc", ours));
    assert!(!etag_matches(b"\"abc", ours));
    assert!(!etag_matches(b"", ours));
}

#[test]
fn accept_takes_the_most_specific_range() {
    let json = Some(hv("application/json; charset=utf-8"));
    let ct = json.as_ref();
    assert!(acceptable(None, ct));
    assert!(acceptable(Some(&hv("*/*")), ct));
    assert!(acceptable(
        Some(&hv("application/json, text/plain, */*")),
        ct
    ));
    assert!(acceptable(Some(&hv("application/*")), ct));
    assert!(acceptable(Some(&hv("Application/JSON")), ct));
    assert!(!acceptable(Some(&hv("text/html")), ct));
    assert!(!acceptable(Some(&hv("application/json;q=0, */*")), ct));
    assert!(acceptable(Some(&hv("*/*;q=0, application/json")), ct));
    assert!(!acceptable(Some(&hv("application/xml")), None));
}

#[test]
fn client_cache_directives_decide_whether_a_stored_answer_will_do() {
    let h = |pairs: &[(HeaderName, &'static str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(k.clone(), hv(v));
        }
        m
    };
    let age = Duration::from_millis(1500);
    assert!(takes_stored(&HeaderMap::new(), age));
    assert!(!takes_stored(
        &h(&[(header::CACHE_CONTROL, "no-cache")]),
        age
    ));
    assert!(!takes_stored(
        &h(&[(header::CACHE_CONTROL, "No-Store")]),
        age
    ));
    assert!(!takes_stored(
        &h(&[(header::CACHE_CONTROL, "max-age=0")]),
        age
    ));
    assert!(!takes_stored(
        &h(&[(header::CACHE_CONTROL, "max-age=1")]),
        age
    ));
    assert!(takes_stored(
        &h(&[(header::CACHE_CONTROL, "max-age=2")]),
        age
    ));
    assert!(!takes_stored(&h(&[(header::PRAGMA, "no-cache")]), age));
    assert!(takes_stored(
        &h(&[
            (header::CACHE_CONTROL, "max-stale"),
            (header::PRAGMA, "no-cache")
        ]),
        age
    ));
}

#[test]
fn repeated_credentials_are_no_poll_identity() {
    let mut h = HeaderMap::new();
    assert_eq!(single(&h, &header::COOKIE), Some(None));
    h.append(header::COOKIE, hv("a=1"));
    assert_eq!(single(&h, &header::COOKIE), Some(Some(&hv("a=1"))));
    h.append(header::COOKIE, hv("b=2"));
    assert_eq!(single(&h, &header::COOKIE), None);
}

#[test]
fn lookups_hash_like_identities() {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    let auth = hv("Bearer a");
    let id = Identity {
        path: "/api/jobs".into(),
        query: "a=1".into(),
        authorization: Some(auth.clone()),
        cookie: None,
    };
    let l = Lookup {
        path: "/api/jobs",
        query: "a=1",
        authorization: Some(&auth),
        cookie: None,
    };
    assert_eq!(s.hash_one(&id), s.hash_one(&l));
    assert!(moka::Equivalent::equivalent(&l, &id));
}

const BASE: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[[feeds]]\nname = \"jobs\"\npoll = \"/api/jobs\"\n";

fn error(text: &str) -> String {
    Config::from_toml(text, Path::new("c.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn serve_polls_is_off_by_default_and_checked_with_its_line() {
    let c = Config::from_toml(BASE, Path::new("c.toml")).expect("valid");
    assert!(!c.feeds[0].serve_polls);
    let on = Config::from_toml(&format!("{BASE}serve_polls = true\n"), Path::new("c.toml"));
    assert!(on.expect("valid").feeds[0].serve_polls);

    let e = error(&format!("{BASE}serve_polls = \"yes\"\n"));
    assert!(e.starts_with("c.toml:7:"), "{e}");
    assert!(e.contains("serve_polls"), "{e}");

    let e = error(&format!("{BASE}sse = \"/api/jobs\"\nserve_polls = true\n"));
    assert!(e.starts_with("c.toml:8:1:"), "{e}");
    assert!(
        e.contains("feeds[0].serve_polls") && e.contains("SSE path"),
        "{e}"
    );

    let e = error(&format!(
        "{BASE}serve_polls = true\n\n[[feeds]]\nname = \"one\"\npoll = \"/api/jobs/{{id}}\"\nsse = \"/api/{{x}}\"\n"
    ));
    assert!(
        e.contains("feeds[0].serve_polls") && e.contains("feeds[1]"),
        "{e}"
    );

    let e = error(
        "[upstream]\nurl = \"http://127.0.0.1:3000\"\npreserve_host = true\n\n[[feeds]]\nname = \"jobs\"\npoll = \"/api/jobs\"\nserve_polls = true\n",
    );
    assert!(e.starts_with("c.toml:8:1:"), "{e}");
    assert!(e.contains("preserve_host"), "{e}");

    let e = error(&format!(
        "{BASE}serve_polls = true\n[admin]\nprefix = \"/api\"\n"
    ));
    assert!(e.contains("serve_polls") && e.contains("prefix"), "{e}");
}
