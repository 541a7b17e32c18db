//! The rules `init` decides with, the same for a schema and a live response:
//! which array of a body is the list, which field of an item is its id, and
//! what a feed is called.
//!
//! This module owns those rules only. It must never read a document, a
//! schema or the network: callers hand it names and flags.

/// Property names that hold the list of a wrapped response, in preference order.
pub(crate) const LIST_NAMES: &[&str] = &["items", "data", "results"];

/// Where the list is in a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListAt {
    /// The body is the array.
    Body,
    /// The body is an object; the list is this property.
    Property(String),
}

impl ListAt {
    /// The `items` JSON Pointer.
    pub(crate) fn pointer(&self) -> String {
        match self {
            ListAt::Body => String::new(),
            ListAt::Property(name) => format!("/{}", escape(name)),
        }
    }
}

/// The list among an object's array-valued properties: `items`, `data` or
/// `results`, else the only one. `Err` says why there is none.
pub(crate) fn pick_list(arrays: &[String]) -> Result<ListAt, String> {
    if let Some(name) = LIST_NAMES.iter().find(|n| arrays.iter().any(|a| a == *n)) {
        return Ok(ListAt::Property((*name).to_owned()));
    }
    match arrays {
        [only] => Ok(ListAt::Property(only.clone())),
        [] => Err("an object without an array property: not a list".into()),
        many => Err(format!(
            "an object with several array properties ({}) and none named items, data or results",
            many.join(", ")
        )),
    }
}

/// One field of an item: its name and whether every item has it (schema
/// `required`, or present in every probed item).
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub required: bool,
}

/// The id pointer chosen for an item, or why none could be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdPick {
    /// The pointer and a short reason for the comment.
    Found(String, String),
    /// No field qualifies; the reason names the candidates, if any.
    Unknown(String),
}

/// `id`; else a required `uuid` or `key`; else the required `*_id` (or
/// `*Id`) field named after the resource (`listing_id` for `/listings`),
/// else the only required one. Fields named like a path parameter of the
/// list (`ruleset_id` in `/rulesets/{ruleset_id}/rules`) name the parent,
/// not the item, and are never chosen.
pub(crate) fn pick_id(fields: &[Field], resource: &str, parents: &[String]) -> IdPick {
    let found = |name: &str, why: String| IdPick::Found(format!("/{}", escape(name)), why);
    if fields.iter().any(|f| f.name == "id") {
        return found("id", "the item's `id` field".into());
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required && !parents.contains(&f.name))
        .map(|f| f.name.as_str())
        .collect();
    for name in ["uuid", "key"] {
        if required.contains(&name) {
            return found(
                name,
                format!("the item's required `{name}` field (no `id`)"),
            );
        }
    }
    let ids: Vec<&str> = required.iter().copied().filter(|n| is_id_name(n)).collect();
    let singular = singular(resource);
    let own = [format!("{singular}_id"), format!("{singular}Id")];
    if let Some(name) = ids.iter().find(|n| own.iter().any(|o| o == *n)) {
        return found(
            name,
            format!("the item's required `{name}` field, named after the resource (no `id`)"),
        );
    }
    match ids.as_slice() {
        [only] => found(
            only,
            format!("the item's only required `*_id` field, `{only}` (no `id`)"),
        ),
        [] => {
            let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            IdPick::Unknown(if names.is_empty() {
                "the item has no known fields".into()
            } else {
                format!(
                    "no `id`, nor a required `*_id`, `uuid` or `key` field among: {}",
                    names.join(", ")
                )
            })
        }
        many => IdPick::Unknown(format!(
            "no `id` and several required id-like fields ({}): which one is the item's own?",
            many.join(", ")
        )),
    }
}

fn is_id_name(name: &str) -> bool {
    (name.len() > 3 && name.ends_with("_id"))
        || (name.len() > 2
            && name.ends_with("Id")
            && name[..name.len() - 2]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

/// `listings` → `listing`, `categories` → `category`, `boxes` → `box`.
fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word
        .strip_suffix("es")
        .filter(|s| s.ends_with(['s', 'x', 'z']) || s.ends_with("ch") || s.ends_with("sh"))
    {
        stem.to_owned()
    } else if let Some(stem) = word.strip_suffix('s').filter(|s| !s.ends_with('s')) {
        stem.to_owned()
    } else {
        word.to_owned()
    }
}

/// The resource a path lists: its last literal segment (`orders` for
/// `/users/{id}/orders`).
pub(crate) fn resource(path: &str) -> String {
    path.split('/')
        .rev()
        .find(|s| !s.is_empty() && !s.starts_with('{'))
        .unwrap_or("")
        .to_owned()
}

/// A feed name from an operationId: FastAPI's generated suffix
/// (`_api_items_get` for `GET /api/items`) is dropped, anything outside
/// letters, digits, `_`, `-`, `.` becomes `_`. `None` when nothing is left.
pub(crate) fn name_from_operation(operation_id: &str, path: &str) -> Option<String> {
    let fastapi: String = path
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect::<String>()
        + "_get";
    let base = operation_id
        .strip_suffix(&fastapi)
        .filter(|s| !s.is_empty())
        .unwrap_or(operation_id);
    clean_name(base)
}

/// A feed name from a path: its literal segments but `api` and versions
/// (`v1`), joined with `_` (`users_orders` for `/api/v1/users/{id}/orders`).
pub(crate) fn name_from_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .filter(|s| *s != "api" && !is_version(s))
        .collect();
    clean_name(&parts.join("_")).unwrap_or_else(|| "root".into())
}

fn is_version(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].chars().all(|c| c.is_ascii_digit())
}

fn clean_name(s: &str) -> Option<String> {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('_').to_owned();
    // "." or ".." would make `/sse/..`: a name needs a letter or digit.
    out.chars()
        .any(|c| c.is_ascii_alphanumeric())
        .then_some(out)
}

/// `name`, or `name_2`, `name_3`... if taken.
pub(crate) fn unique(name: String, taken: &[String]) -> String {
    if !taken.contains(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name}_{i}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(name)
}

/// A path parameter name pollcast accepts (letters, digits, `_`, `-`).
pub(crate) fn param_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "param".into()
    } else {
        s
    }
}

/// RFC 6901 escaping of one reference token.
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick_id(fields: &[Field], resource: &str) -> IdPick {
        super::pick_id(fields, resource, &[])
    }

    fn fields(spec: &[(&str, bool)]) -> Vec<Field> {
        spec.iter()
            .map(|(n, r)| Field {
                name: (*n).into(),
                required: *r,
            })
            .collect()
    }

    #[test]
    fn the_list_is_items_data_results_or_the_only_array() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pick_list(&s(&["tags", "data"])),
            Ok(ListAt::Property("data".into()))
        );
        assert_eq!(
            pick_list(&s(&["results", "items"])),
            Ok(ListAt::Property("items".into()))
        );
        assert_eq!(
            pick_list(&s(&["rows"])),
            Ok(ListAt::Property("rows".into()))
        );
        assert!(pick_list(&s(&[])).unwrap_err().contains("not a list"));
        let e = pick_list(&s(&["a", "b"])).unwrap_err();
        assert!(e.contains("a, b"), "{e}");
        assert_eq!(ListAt::Property("a/b".into()).pointer(), "/a~1b");
        assert_eq!(ListAt::Body.pointer(), "");
    }

    #[test]
    fn the_id_is_id_then_a_required_uuid_key_or_star_id() {
        let found = |p: IdPick| match p {
            IdPick::Found(p, _) => p,
            IdPick::Unknown(w) => panic!("unknown: {w}"),
        };
        assert_eq!(
            found(pick_id(&fields(&[("id", false), ("uuid", true)]), "x")),
            "/id"
        );
        assert_eq!(
            found(pick_id(&fields(&[("owner_id", true), ("uuid", true)]), "x")),
            "/uuid"
        );
        assert_eq!(
            found(pick_id(&fields(&[("key", true), ("name", true)]), "x")),
            "/key"
        );
        assert_eq!(
            found(pick_id(
                &fields(&[("seller_id", true), ("listing_id", true)]),
                "listings"
            )),
            "/listing_id"
        );
        assert_eq!(
            found(pick_id(
                &fields(&[("categoryId", true), ("name", true)]),
                "categories"
            )),
            "/categoryId"
        );
        assert_eq!(
            found(pick_id(&fields(&[("order_id", true)]), "x")),
            "/order_id"
        );
        // Optional fields do not identify an item.
        assert!(matches!(
            pick_id(&fields(&[("order_id", false), ("uuid", false)]), "x"),
            IdPick::Unknown(_)
        ));
        match pick_id(&fields(&[("a_id", true), ("b_id", true)]), "things") {
            IdPick::Unknown(w) => assert!(w.contains("a_id, b_id"), "{w}"),
            other => panic!("{other:?}"),
        }
        match pick_id(&fields(&[("name", true)]), "x") {
            IdPick::Unknown(w) => assert!(w.contains("name"), "{w}"),
            other => panic!("{other:?}"),
        }
        // The parent's id (a path parameter of the list) is not the item's.
        match super::pick_id(
            &fields(&[("ruleset_id", true), ("rule_id", false)]),
            "rules",
            &["ruleset_id".into()],
        ) {
            IdPick::Unknown(w) => assert!(w.contains("ruleset_id"), "{w}"),
            other => panic!("{other:?}"),
        }
        // `_id` alone and `Id` alone are not `*_id` fields.
        assert!(matches!(
            pick_id(&fields(&[("_id", true), ("Id", true)]), "x"),
            IdPick::Unknown(_)
        ));
    }

    #[test]
    fn names_come_from_the_operation_id_or_the_path() {
        assert_eq!(
            name_from_operation("list_listings_api_listings_get", "/api/listings").as_deref(),
            Some("list_listings")
        );
        assert_eq!(
            name_from_operation(
                "list_bids_api_listings__listing_id__bids_get",
                "/api/listings/{listing_id}/bids"
            )
            .as_deref(),
            Some("list_bids")
        );
        assert_eq!(
            name_from_operation("listPets", "/pets").as_deref(),
            Some("listPets")
        );
        assert_eq!(
            name_from_operation("get pets!", "/pets").as_deref(),
            Some("get_pets")
        );
        assert_eq!(name_from_operation("!!", "/pets"), None);
        assert_eq!(name_from_operation("..", "/pets"), None);
        assert_eq!(name_from_path("/api/v1/users/{id}/orders"), "users_orders");
        assert_eq!(name_from_path("/"), "root");
        assert_eq!(unique("a".into(), &["a".into(), "a_2".into()]), "a_3");
        assert_eq!(param_name("item.id"), "item_id");
        assert_eq!(resource("/users/{id}/orders"), "orders");
    }
}
