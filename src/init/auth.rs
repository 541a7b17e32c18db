//! A feed's `auth` and `token_param` from the operation's security
//! requirements: bearer, basic, OAuth2, OpenID Connect and cookie keys
//! travel in `Authorization`/`Cookie`, which `auth = "forward"` forwards; an
//! `apiKey` in the query becomes `token_param`.
//!
//! This module owns reading security schemes. It must never pick anything
//! but `forward`: a document that declares no security may simply not
//! describe it, and `none` would share one poll loop between users.

use serde_json::Value;

use super::doc::{Doc, Node};
use super::InitError;

pub(crate) struct AuthPlan {
    pub token_param: Option<String>,
    /// Comment lines explaining the choice (a `TODO:` prefix asks for a decision).
    pub notes: Vec<String>,
}

pub(crate) fn choose(doc: &Doc<'_>, swagger2: bool, op: &Node<'_>) -> Result<AuthPlan, InitError> {
    let top = doc.root();
    let reqs = doc
        .get(op, "security")
        .or_else(|| doc.get(&top, "security"));
    let mut plan = AuthPlan {
        token_param: None,
        notes: Vec::new(),
    };
    let mut names: Vec<(String, Node<'_>)> = Vec::new();
    let mut optional = false;
    if let Some(reqs) = &reqs {
        for req in doc.elements(reqs) {
            let entries = doc.entries(&req);
            optional |= entries.is_empty();
            for (name, at) in entries {
                if !names.iter().any(|(n, _)| n == name) {
                    names.push((name.to_owned(), at));
                }
            }
        }
    }
    if names.is_empty() {
        plan.notes.push(
            "The document declares no security here. \"forward\" is the safe choice (each \
             subscriber's Authorization and Cookie go with its own polls); if this list is \
             the same for everyone, \"none\" shares one poll loop among all subscribers."
                .into(),
        );
        return Ok(plan);
    }
    let defs = if swagger2 {
        "#/securityDefinitions"
    } else {
        "#/components/securitySchemes"
    };
    for (name, at) in names {
        let def = doc
            .root
            .pointer(&format!("{}/{}", &defs[1..], super::detect::escape(&name)));
        let Some(def) = def else {
            return Err(doc.error(
                &at,
                format!("security scheme `{name}` is not defined in {defs}"),
            ));
        };
        let def = doc.resolve(Node {
            value: def,
            at: format!("{defs}/{}", super::detect::escape(&name)),
        })?;
        let s = |k: &str| def.value.get(k).and_then(Value::as_str).unwrap_or("");
        let note = match s("type") {
            "http" if s("scheme").eq_ignore_ascii_case("bearer") => {
                format!("Security `{name}` (HTTP bearer): each subscriber's Authorization is forwarded on its polls.")
            }
            "http" | "basic" => format!(
                "Security `{name}` (HTTP {}): each subscriber's Authorization is forwarded on its polls.",
                if s("type") == "basic" { "basic" } else { s("scheme") }
            ),
            "oauth2" | "openIdConnect" => format!(
                "Security `{name}` ({}): each subscriber's bearer token (Authorization) is forwarded on its polls.",
                s("type")
            ),
            "apiKey" => match s("in") {
                "cookie" => format!(
                    "Security `{name}` (cookie `{}`): each subscriber's Cookie is forwarded on its polls.",
                    s("name")
                ),
                "header" if s("name").eq_ignore_ascii_case("authorization") => format!(
                    "Security `{name}` (Authorization header): forwarded on each subscriber's polls."
                ),
                "query" if plan.token_param.is_none() => {
                    let param = s("name");
                    if param.is_empty()
                        || param.contains(['&', '=', '#', '+', '%', ' '])
                        || crate::config::OWN_PARAMS.contains(&param)
                    {
                        format!("TODO: security `{name}` is a key in query parameter `{param}`, which cannot be a token_param; decide how subscribers authenticate.")
                    } else {
                        plan.token_param = Some(param.to_owned());
                        format!(
                            "Security `{name}` (apiKey in query `{param}`): subscribers pass ?{param}=<key>; pollcast sends it upstream as `Authorization: Bearer <key>`, never as the parameter. If the API only reads the parameter, remove token_param and add \"{param}\" to query (the parameter then goes with the polls and is part of the feed's identity)."
                        )
                    }
                }
                "query" => format!("Security `{name}` (apiKey in query `{}`): only one token_param per feed; `{}` is used.", s("name"), plan.token_param.as_deref().unwrap_or("")),
                inn => format!(
                    "TODO: security `{name}` sends a key in {inn} `{}`, which pollcast does not forward (only Authorization and Cookie). Have the API also accept a bearer token or a cookie, or use auth = \"check\" with credentials_env (docs/security.md).",
                    s("name")
                ),
            },
            other => format!("TODO: security `{name}` has type `{other}`, which init does not know; check that subscribers' Authorization or Cookie is enough."),
        };
        plan.notes.push(note);
    }
    if optional {
        plan.notes
            .push("Security is optional here (an empty requirement): anonymous subscribers share one poll loop.".into());
    }
    Ok(plan)
}
