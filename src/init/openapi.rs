//! From an OpenAPI 3.0/3.1 or Swagger 2.0 document to a [`Plan`]: every GET
//! operation whose success response is a list becomes a feed.
//!
//! This module owns what the document's parts mean (servers, paths,
//! parameters, responses, security). It must never fetch, write files or
//! render text; the rules of choice live in `detect`.

use serde_json::Value;

use super::detect::{self, Field, ListAt};
use super::doc::{Doc, Node};
use super::schema::{self, Kind};
use super::{FeedPlan, InitError, Plan};

const WRITES: &[&str] = &["post", "put", "patch", "delete"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Swagger2,
    OpenApi3,
}

/// Where the document says the API is.
struct Server {
    /// `http://host:port` or `https://host`, when the document names a host.
    origin: Option<String>,
    /// The base path every operation path is under (`/api/v1`, or empty).
    path: String,
}

/// Plan feeds from a parsed document. `doc_url` is where it was fetched
/// from (a relative server URL is relative to it); `upstream` is `--upstream`.
pub(crate) fn plan(
    root: &Value,
    source: &str,
    doc_url: Option<&str>,
    upstream: Option<&str>,
) -> Result<Plan, InitError> {
    let doc = Doc::new(root, source);
    let top = doc.root();
    if !root.is_object() {
        return Err(doc.error(
            &top,
            "not an OpenAPI document: the top level is not an object",
        ));
    }
    let (version, label) = version(&doc)?;
    let server = server(&doc, version);
    let (upstream_url, upstream_note, base) =
        super::choose_upstream(upstream, server.origin.as_deref(), &server.path, doc_url);
    let Some(paths) = doc.get(&top, "paths") else {
        return Err(doc.error(&top, "the document has no `paths`"));
    };
    if !paths.value.is_object() {
        return Err(doc.error(&paths, "`paths` is not an object"));
    }
    let mut items = Vec::new();
    for (path, item) in doc.entries(&paths) {
        if !path.starts_with('/') {
            continue; // `x-` extensions
        }
        items.push((path, doc.resolve(item)?));
    }
    let writes: Vec<(String, &str)> = items
        .iter()
        .flat_map(|(path, item)| {
            WRITES
                .iter()
                .filter(|m| item.value.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), *path))
        })
        .collect();
    let title = root.pointer("/info/title").and_then(Value::as_str);
    let mut plan = Plan {
        source: match title {
            Some(t) => format!("{source} ({label}, \"{t}\")"),
            None => format!("{source} ({label})"),
        },
        upstream: upstream_url,
        upstream_note,
        feeds: Vec::new(),
        skipped: Vec::new(),
    };
    for (path, item) in &items {
        let Some(op) = doc.get(item, "get") else {
            continue;
        };
        match feed(&doc, version, path, item, op)? {
            Ok(mut f) => {
                let taken: Vec<String> = plan.feeds.iter().map(|f| f.name.clone()).collect();
                f.name = detect::unique(f.name, &taken);
                f.poll = format!("{base}{}", f.poll);
                f.from = f.from.replacen(path, &format!("{base}{path}"), 1);
                f.sse = sse_path(&f.name, &f.poll);
                f.writes = writes
                    .iter()
                    .filter(|(_, w)| covers(path, w))
                    .map(|(m, w)| format!("{m} {base}{w}"))
                    .collect();
                plan.feeds.push(f);
            }
            Err(why) => plan.skipped.push(format!("GET {base}{path}: {why}")),
        }
    }
    Ok(plan)
}

fn version(doc: &Doc<'_>) -> Result<(Version, String), InitError> {
    let top = doc.root();
    if let Some(v) = doc.get(&top, "openapi") {
        let s = v.value.as_str().unwrap_or("");
        if s.starts_with("3.") {
            return Ok((Version::OpenApi3, format!("OpenAPI {s}")));
        }
        return Err(doc.error(
            &v,
            format!(
                "OpenAPI version `{}` is not supported (3.0, 3.1 and Swagger 2.0 are)",
                v.value
            ),
        ));
    }
    if let Some(v) = doc.get(&top, "swagger") {
        if v.value.as_str().is_some_and(|s| s.starts_with("2.")) {
            return Ok((Version::Swagger2, "Swagger 2.0".into()));
        }
        return Err(doc.error(
            &v,
            format!("Swagger version `{}` is not supported (2.0 is)", v.value),
        ));
    }
    Err(doc.error(
        &top,
        "not an OpenAPI document: neither an `openapi` nor a `swagger` field",
    ))
}

fn server(doc: &Doc<'_>, version: Version) -> Server {
    let root = doc.root;
    match version {
        Version::OpenApi3 => {
            let Some(s) = root.pointer("/servers/0") else {
                return Server {
                    origin: None,
                    path: String::new(),
                };
            };
            let mut url = s
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(vars) = s.get("variables").and_then(Value::as_object) {
                for (k, v) in vars {
                    if let Some(d) = v.get("default").and_then(Value::as_str) {
                        url = url.replace(&format!("{{{k}}}"), d);
                    }
                }
            }
            split_url(&url)
        }
        Version::Swagger2 => {
            let path = root
                .get("basePath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned();
            let origin = root.get("host").and_then(Value::as_str).map(|h| {
                let schemes = root.get("schemes").and_then(Value::as_array);
                let http = schemes.map_or(true, |s| s.iter().any(|x| x == "http"));
                format!("{}://{h}", if http { "http" } else { "https" })
            });
            Server { origin, path }
        }
    }
}

/// `http://host:8000/api` → origin and path; `/api` → path only.
fn split_url(url: &str) -> Server {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        return Server {
            origin: Some(format!("{scheme}://{host}")),
            path: path.trim_end_matches('/').to_owned(),
        };
    }
    Server {
        origin: None,
        path: url.trim_end_matches('/').to_owned(),
    }
}

/// Does a write to `write` land at or under the list path `list`? Path
/// parameters match each other whatever their names.
fn covers(list: &str, write: &str) -> bool {
    let l: Vec<&str> = list.split('/').collect();
    let w: Vec<&str> = write.split('/').collect();
    w.len() >= l.len()
        && l.iter()
            .zip(&w)
            .all(|(a, b)| a == b || (a.starts_with('{') && b.starts_with('{')))
}

/// `/sse/<name>`, then one `{param}` segment per path parameter of `poll`.
fn sse_path(name: &str, poll: &str) -> String {
    let mut sse = format!("/sse/{name}");
    for seg in poll.split('/').filter(|s| s.starts_with('{')) {
        sse.push('/');
        sse.push_str(seg);
    }
    sse
}

/// One GET operation: `Ok(Ok(feed))`, `Ok(Err(why it is not one))`, or an
/// error when the document is broken there.
fn feed(
    doc: &Doc<'_>,
    version: Version,
    path: &str,
    item: &Node<'_>,
    op: Node<'_>,
) -> Result<Result<FeedPlan, String>, InitError> {
    let op_id = op.value.get("operationId").and_then(Value::as_str);
    let mut from = format!("GET {path}");
    if let Some(id) = op_id {
        from.push_str(&format!(" (operationId {id})"));
    }
    if let Some(s) = op.value.get("summary").and_then(Value::as_str) {
        from.push_str(&format!(": {}", s.lines().next().unwrap_or("")));
    }
    // Path parameters: each whole segment `{name}` becomes a pollcast parameter.
    let mut poll = String::new();
    let mut taken: Vec<String> = Vec::new();
    for seg in path.split('/').skip(1) {
        poll.push('/');
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let p = detect::unique(detect::param_name(name), &taken);
                poll.push_str(&format!("{{{p}}}"));
                taken.push(p);
            }
            None if seg.contains(['{', '}']) => {
                return Ok(Err(format!(
                    "segment `{seg}`: pollcast path parameters must be whole segments"
                )))
            }
            None if seg.contains([' ', '?', '#']) => {
                return Ok(Err(format!("segment `{seg}` is not a plain path segment")))
            }
            None => poll.push_str(seg),
        }
    }
    let Some(body) = success_schema(doc, version, &op)? else {
        return Ok(Err("no JSON success response with a schema".into()));
    };
    let top = schema::shape(doc, body)?;
    let (list, element, items_why) = match top.kind {
        Kind::Array => (
            ListAt::Body,
            top.items.clone(),
            "the response body is the array".to_owned(),
        ),
        Kind::Object => {
            let mut arrays = Vec::new();
            let mut elements = Vec::new();
            for (name, s) in &top.props {
                let s = schema::shape(doc, s.clone())?;
                if s.kind == Kind::Array {
                    arrays.push(name.clone());
                    elements.push(s.items);
                }
            }
            let list = match detect::pick_list(&arrays) {
                Ok(l) => l,
                Err(why) => return Ok(Err(format!("the response is {why}"))),
            };
            let ListAt::Property(name) = &list else {
                return Ok(Err("unreachable".into()));
            };
            let i = arrays.iter().position(|a| a == name).unwrap_or(0);
            let what = top.name().map(|n| format!(" ({n})")).unwrap_or_default();
            let why = format!("the response is an object{what}; its list is `{name}`");
            (list.clone(), elements.get(i).cloned().flatten(), why)
        }
        Kind::Other => return Ok(Err("the response is not a list".into())),
    };
    let resource = detect::resource(path);
    let (id, item_name) = match element {
        Some(e) => {
            let s = schema::shape(doc, e)?;
            let fields: Vec<Field> = s
                .props
                .iter()
                .map(|(n, _)| Field {
                    name: n.clone(),
                    required: s.required.contains(n),
                })
                .collect();
            let parents: Vec<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            (
                detect::pick_id(&fields, &resource, &parents),
                s.name().map(str::to_owned),
            )
        }
        None => (
            detect::IdPick::Unknown("the list's items have no schema".into()),
            None,
        ),
    };
    let params = parameters(doc, item, &op)?;
    let auth = super::auth::choose(doc, version == Version::Swagger2, &op)?;
    let mut query = Vec::new();
    let mut notes = Vec::new();
    for (name, _) in params.iter().filter(|(_, inn)| inn == "query") {
        if auth.token_param.as_deref() == Some(name.as_str()) {
            continue;
        }
        if name.is_empty()
            || name.contains(['&', '=', '#', '+', '%', ' '])
            || crate::config::OWN_PARAMS.contains(&name.as_str())
        {
            notes.push(format!(
                "query parameter `{name}` cannot be listed in `query` (pollcast's own or not a plain name)"
            ));
            continue;
        }
        query.push(name.clone());
    }
    let name = op_id
        .and_then(|id| detect::name_from_operation(id, path))
        .unwrap_or_else(|| detect::name_from_path(path));
    Ok(Ok(FeedPlan {
        name,
        poll,
        sse: String::new(),
        from,
        items: list.pointer(),
        items_why,
        id,
        item_name,
        query: Some(query),
        token_param: auth.token_param,
        auth_notes: auth.notes,
        writes: Vec::new(),
        notes,
    }))
}

/// The schema of the 200 (else 2XX, else lowest 2xx) JSON response.
fn success_schema<'a>(
    doc: &Doc<'a>,
    version: Version,
    op: &Node<'a>,
) -> Result<Option<Node<'a>>, InitError> {
    let Some(responses) = doc.get(op, "responses") else {
        return Ok(None);
    };
    let mut codes: Vec<(&str, Node<'a>)> = doc
        .entries(&responses)
        .into_iter()
        .filter(|(c, _)| c.starts_with('2'))
        .collect();
    codes.sort_by_key(|(c, _)| match *c {
        "200" => (0, String::new()),
        "2XX" | "2xx" => (1, String::new()),
        c => (2, c.to_owned()),
    });
    let Some((_, response)) = codes.into_iter().next() else {
        return Ok(None);
    };
    let response = doc.resolve(response)?;
    if version == Version::Swagger2 {
        return Ok(doc.get(&response, "schema"));
    }
    let Some(content) = doc.get(&response, "content") else {
        return Ok(None);
    };
    let media = doc.entries(&content);
    let pick = media
        .iter()
        .find(|(m, _)| *m == "application/json")
        .or_else(|| media.iter().find(|(m, _)| m.contains("json")))
        .or_else(|| media.iter().find(|(m, _)| *m == "*/*"));
    Ok(pick.and_then(|(_, m)| doc.get(m, "schema")))
}

/// Declared parameters as (name, in): the path item's, overridden by the
/// operation's of the same name and location.
fn parameters(
    doc: &Doc<'_>,
    item: &Node<'_>,
    op: &Node<'_>,
) -> Result<Vec<(String, String)>, InitError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for owner in [item, op] {
        let Some(list) = doc.get(owner, "parameters") else {
            continue;
        };
        for p in doc.elements(&list) {
            let p = doc.resolve(p)?;
            let name = p.value.get("name").and_then(Value::as_str);
            let inn = p.value.get("in").and_then(Value::as_str);
            let (Some(name), Some(inn)) = (name, inn) else {
                return Err(doc.error(&p, "a parameter without `name` and `in`"));
            };
            out.retain(|(n, i)| !(n == name && i == inn));
            out.push((name.to_owned(), inn.to_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cover_the_list_path_and_below() {
        assert!(covers("/items", "/items"));
        assert!(covers("/items", "/items/{id}"));
        assert!(covers(
            "/users/{user_id}/orders",
            "/users/{uid}/orders/{oid}"
        ));
        assert!(!covers("/items", "/item"));
        assert!(!covers("/items/{id}", "/items"));
        assert!(!covers("/users/{u}/orders", "/users/me/orders"));
    }

    #[test]
    fn sse_paths_carry_the_poll_parameters() {
        assert_eq!(
            sse_path("bids", "/api/listings/{listing_id}/bids"),
            "/sse/bids/{listing_id}"
        );
        assert_eq!(sse_path("items", "/items"), "/sse/items");
    }

    #[test]
    fn server_urls_split_into_origin_and_base_path() {
        let s = split_url("http://localhost:8000/api/v1/");
        assert_eq!(s.origin.as_deref(), Some("http://localhost:8000"));
        assert_eq!(s.path, "/api/v1");
        let s = split_url("/v2");
        assert!(s.origin.is_none());
        assert_eq!(s.path, "/v2");
    }
}
