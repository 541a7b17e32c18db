//! `pollcast init --probe URL PATH...`: a [`Plan`] from live responses when
//! the API has no document: each path is fetched once with GET and its body
//! judged by the same rules as a schema.
//!
//! This module owns reading lists and ids out of JSON bodies. It must never
//! send anything but GET (that is `fetch`'s promise) nor guess from non-JSON.

use serde_json::Value;

use super::detect::{self, Field, IdPick, ListAt};
use super::{fetch, FeedPlan, InitError, Plan};

pub(crate) async fn plan(
    url: &str,
    paths: &[String],
    upstream: Option<&str>,
) -> Result<Plan, InitError> {
    let base = url.trim_end_matches('/');
    let (origin, prefix) = match base.split_once("://") {
        Some(("http", rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            (format!("http://{host}"), path.to_owned())
        }
        _ => return Err(InitError::Fetch(fetch::FetchError::Url(url.to_owned()))),
    };
    let (upstream_url, upstream_note, base_path) =
        super::choose_upstream(upstream, Some(&origin), &prefix, None);
    let mut plan = Plan {
        source: format!("GET responses of {base}"),
        upstream: upstream_url,
        upstream_note,
        feeds: Vec::new(),
        skipped: Vec::new(),
    };
    for path in paths {
        if !path.starts_with('/') {
            return Err(InitError::Usage(format!(
                "probe path `{path}` must start with `/`"
            )));
        }
        let (p, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path.as_str(), None),
        };
        let target = format!("{origin}{prefix}{path}");
        let got = fetch::get(&target).await?;
        let shown = format!("GET {prefix}{path}");
        if !got.status.is_success() {
            plan.skipped
                .push(format!("{shown}: answered {}", got.status));
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&got.body) else {
            plan.skipped.push(format!(
                "{shown}: the answer is not JSON (Content-Type `{}`)",
                got.content_type
            ));
            continue;
        };
        let judged = judge(&body, &detect::resource(p));
        let (list, id, why) = match judged {
            Ok(j) => j,
            Err(why) => {
                plan.skipped.push(format!("{shown}: {why}"));
                continue;
            }
        };
        let taken: Vec<String> = plan.feeds.iter().map(|f| f.name.clone()).collect();
        let name = detect::unique(detect::name_from_path(p), &taken);
        let mut notes = vec![
            "Any query parameter is accepted (`query` unset): list the ones the API takes to refuse others.".to_owned(),
        ];
        if let Some(q) = query {
            notes.push(format!(
                "Probed with ?{q}; subscribers' own query strings are appended to the poll path."
            ));
        }
        plan.feeds.push(FeedPlan {
            sse: format!("/sse/{name}"),
            name,
            poll: format!("{base_path}{p}"),
            from: shown,
            items: list.pointer(),
            items_why: why,
            id,
            item_name: None,
            query: None,
            token_param: None,
            auth_notes: vec![
                "A probe cannot see the API's security. \"forward\" is the safe choice (each subscriber's Authorization and Cookie go with its own polls); if this list is the same for everyone, \"none\" shares one poll loop among all subscribers.".into(),
            ],
            writes: Vec::new(),
            notes,
        });
    }
    Ok(plan)
}

/// Where the list is in `body`, which field identifies its items, and a
/// reason for the comment; `Err` when the body is not a list.
pub(crate) fn judge(body: &Value, resource: &str) -> Result<(ListAt, IdPick, String), String> {
    let (list, items, why) = match body {
        Value::Array(a) => (ListAt::Body, a, "the response body is the array".to_owned()),
        Value::Object(m) => {
            let arrays: Vec<String> = m
                .iter()
                .filter(|(_, v)| v.is_array())
                .map(|(k, _)| k.clone())
                .collect();
            let list = detect::pick_list(&arrays).map_err(|w| format!("the answer is {w}"))?;
            let ListAt::Property(name) = &list else {
                return Err("the answer is not a list".into());
            };
            let Some(Value::Array(items)) = m.get(name) else {
                return Err("the answer is not a list".into());
            };
            let why = format!("the response is an object; its list is `{name}`");
            (list, items, why)
        }
        _ => return Err("the answer is neither an array nor an object".into()),
    };
    Ok((list, id_of(items, resource), why))
}

fn id_of(items: &[Value], resource: &str) -> IdPick {
    if items.is_empty() {
        return IdPick::Unknown(
            "the list was empty when probed, so its items could not be seen".into(),
        );
    }
    let objects: Vec<&serde_json::Map<String, Value>> =
        items.iter().filter_map(Value::as_object).collect();
    if objects.len() != items.len() {
        return IdPick::Unknown("the list's items are not all objects".into());
    }
    let mut fields: Vec<Field> = Vec::new();
    for o in &objects {
        for k in o.keys() {
            if !fields.iter().any(|f| &f.name == k) {
                fields.push(Field {
                    name: k.clone(),
                    // "Required" = present, and an id-shaped value, in every item.
                    required: objects
                        .iter()
                        .all(|o| o.get(k).is_some_and(|v| v.is_string() || v.is_number())),
                });
            }
        }
    }
    let pick = detect::pick_id(&fields, resource, &[]);
    if let IdPick::Found(pointer, _) = &pick {
        let values: Vec<Option<&Value>> = objects.iter().map(|o| o.get(&pointer[1..])).collect();
        let distinct: std::collections::HashSet<String> =
            values.iter().flatten().map(|v| v.to_string()).collect();
        if values.iter().any(Option::is_none) || distinct.len() != values.len() {
            return IdPick::Unknown(format!(
                "`{}` is missing or repeated among the probed items",
                &pointer[1..]
            ));
        }
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(p: IdPick) -> String {
        match p {
            IdPick::Found(p, _) => p,
            IdPick::Unknown(w) => format!("?{w}"),
        }
    }

    #[test]
    fn bodies_are_judged_like_schemas() {
        let (l, i, _) = judge(&json!([{"id": 1}, {"id": 2}]), "x").expect("list");
        assert_eq!((l, id(i).as_str()), (ListAt::Body, "/id"));
        let (l, i, _) = judge(
            &json!({"total": 2, "data": [{"order_id": "a", "user_id": "u"}, {"order_id": "b", "user_id": "u"}]}),
            "orders",
        )
        .expect("list");
        assert_eq!(l, ListAt::Property("data".into()));
        assert_eq!(id(i), "/order_id");
        let (_, i, _) = judge(&json!({"rows": []}), "x").expect("list");
        assert!(id(i).contains("empty"));
        assert!(judge(&json!({"name": "x"}), "x").is_err());
        assert!(judge(&json!(3), "x").is_err());
    }

    #[test]
    fn an_id_must_be_in_every_item_and_unique() {
        let (_, i, _) = judge(&json!([{"id": 1}, {"id": 1}]), "x").expect("list");
        assert!(id(i).contains("repeated"));
        // `key` present in one item only is not required.
        let (_, i, _) = judge(&json!([{"key": "a", "n": 1}, {"n": 2}]), "x").expect("list");
        assert!(id(i).starts_with('?'));
    }
}
