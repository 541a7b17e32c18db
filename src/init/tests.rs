//! The planning rules over small hand-written documents: 3.0, 3.1 and
//! Swagger 2.0, wrapped lists, path parameters, bearer, cookie and query
//! key security, and items without an id.

use serde_json::{json, Value};

use super::detect::IdPick;
use super::{openapi, FeedPlan, Plan};

fn plan(doc: Value) -> Plan {
    openapi::plan(&doc, "t.json", None, Some("http://127.0.0.1:9")).expect("plan")
}

fn only(p: &Plan) -> &FeedPlan {
    assert_eq!(p.feeds.len(), 1, "skipped: {:?}", p.skipped);
    &p.feeds[0]
}

fn id(f: &FeedPlan) -> &str {
    match &f.id {
        IdPick::Found(p, _) => p,
        IdPick::Unknown(_) => "?",
    }
}

/// A 3.x document with one GET whose 200 JSON schema is `schema`.
fn three(version: &str, path: &str, schema: Value, extra: Value) -> Value {
    let mut doc = json!({
        "openapi": version,
        "paths": {path: {"get": {"operationId": "op",
            "responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": schema}}}}}}}
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    doc
}

#[test]
fn a_3_1_top_level_array_with_bearer_security() {
    let p = plan(three(
        "3.1.0",
        "/items",
        json!({"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}}}),
        json!({"security": [{"bearer": []}],
               "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}),
    ));
    let f = only(&p);
    assert_eq!(
        (f.name.as_str(), f.poll.as_str(), f.sse.as_str()),
        ("op", "/items", "/sse/op")
    );
    assert_eq!((f.items.as_str(), id(f)), ("", "/id"));
    assert!(f.token_param.is_none());
    assert!(
        f.auth_notes[0].contains("HTTP bearer"),
        "{:?}",
        f.auth_notes
    );
}

#[test]
fn a_3_0_wrapped_list_with_cookie_security_and_path_parameters() {
    let p = plan(three(
        "3.0.3",
        "/users/{user.id}/orders",
        json!({"type": "object", "properties": {
            "results": {"type": "array", "items": {"type": "object", "required": ["order_id", "user_id"],
                "properties": {"order_id": {"type": "string"}, "user_id": {"type": "string"}}}},
            "count": {"type": "integer"}}}),
        json!({"security": [{"c": []}],
               "components": {"securitySchemes": {"c": {"type": "apiKey", "in": "cookie", "name": "sid"}}}}),
    ));
    let f = only(&p);
    // A parameter name pollcast cannot use is renamed in both paths.
    assert_eq!(f.poll, "/users/{user_id}/orders");
    assert_eq!(f.sse, "/sse/op/{user_id}");
    assert_eq!((f.items.as_str(), id(f)), ("/results", "/order_id"));
    assert!(
        f.auth_notes[0].contains("cookie `sid`"),
        "{:?}",
        f.auth_notes
    );
}

#[test]
fn swagger_2_with_a_query_key_and_no_id() {
    let doc = json!({
        "swagger": "2.0", "basePath": "/v1",
        "securityDefinitions": {"k": {"type": "apiKey", "in": "query", "name": "key_param"}},
        "security": [{"k": []}],
        "paths": {"/things": {"get": {
            "parameters": [{"name": "q", "in": "query", "type": "string"},
                           {"name": "key_param", "in": "query", "type": "string"}],
            "responses": {"200": {"description": "ok", "schema": {"type": "object", "properties": {
                "data": {"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"}}}}}}}}}}}
    });
    let p = plan(doc);
    let f = only(&p);
    assert_eq!((f.name.as_str(), f.poll.as_str()), ("things", "/v1/things"));
    assert_eq!(f.items, "/data");
    assert_eq!(id(f), "?");
    assert_eq!(f.token_param.as_deref(), Some("key_param"));
    assert_eq!(f.query.as_deref(), Some(&["q".to_owned()][..]));
}

#[test]
fn non_lists_are_skipped_with_why() {
    let p = plan(three(
        "3.0.0",
        "/me",
        json!({"type": "object", "properties": {"a": {"type": "array"}, "b": {"type": "array"}}}),
        json!({}),
    ));
    assert!(p.feeds.is_empty());
    assert!(
        p.skipped[0].contains("several array properties (a, b)"),
        "{:?}",
        p.skipped
    );
}

#[test]
fn a_header_key_is_marked_todo() {
    let p = plan(three(
        "3.0.0",
        "/items",
        json!({"type": "array", "items": {}}),
        json!({"security": [{"h": []}],
               "components": {"securitySchemes": {"h": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}}}),
    ));
    let f = only(&p);
    assert!(f.auth_notes[0].starts_with("TODO:") && f.auth_notes[0].contains("X-API-Key"));
    assert!(matches!(f.id, IdPick::Unknown(_)));
}

#[test]
fn the_upstream_comes_from_the_flag_the_server_or_the_document_url() {
    use super::choose_upstream as choose;
    // The flag wins; a base path it already ends with is not repeated in poll.
    let (url, note, base) = choose(Some("http://api:80/v2/"), Some("http://x"), "/v2", None);
    assert_eq!(
        (url.as_str(), note, base.as_str()),
        ("http://api:80/v2", None, "")
    );
    let (_, _, base) = choose(Some("http://api:80"), None, "/v2", None);
    assert_eq!(base, "/v2");
    // An http server is used; an https one is not (pollcast speaks http).
    let (url, note, _) = choose(None, Some("http://10.0.0.5:3000"), "", None);
    assert_eq!((url.as_str(), note), ("http://10.0.0.5:3000", None));
    let (url, note, base) = choose(None, Some("https://api.example.com"), "/v1", None);
    assert_eq!(url, "http://127.0.0.1:8000");
    assert!(
        note.is_some_and(|n| n.starts_with("TODO:") && n.contains("https://api.example.com/v1"))
    );
    assert_eq!(base, "/v1");
    // A relative server (FastAPI's root_path) is relative to the document's URL.
    let (url, note, base) = choose(
        None,
        None,
        "/api",
        Some("http://127.0.0.1:8000/api/openapi.json"),
    );
    assert_eq!(
        (url.as_str(), note, base.as_str()),
        ("http://127.0.0.1:8000", None, "/api")
    );
    let (url, note, _) = choose(None, None, "", None);
    assert_eq!(url, "http://127.0.0.1:8000");
    assert!(note.is_some_and(|n| n.starts_with("TODO:")));
}
