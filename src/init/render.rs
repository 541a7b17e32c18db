//! A [`Plan`] as config.toml text: every choice explained in a comment,
//! every open question marked `TODO`, and nothing a `--check` would refuse.
//!
//! This module owns the text. It must never decide a value (the plan has
//! them) nor write files.

use std::fmt::Write;

use super::detect::IdPick;
use super::{FeedPlan, Plan};

const WIDTH: usize = 78;

/// TOML for a string (quoted and escaped).
fn s(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

/// `# ` lines wrapped at [`WIDTH`], continuation lines indented by `indent`.
fn comment(out: &mut String, text: &str, indent: &str) {
    let lead = &text[..text.len() - text.trim_start().len()];
    let mut line = format!("#{lead}");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > WIDTH && line.len() > 2 {
            out.push_str(&line);
            out.push('\n');
            line = format!("#{indent}");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

pub(crate) fn render(plan: &Plan, out_name: &str) -> String {
    let mut o = String::new();
    comment(
        &mut o,
        &format!(
            "pollcast configuration written by `pollcast init` from {}.",
            plan.source
        ),
        "",
    );
    comment(
        &mut o,
        &format!(
            "Review every line marked TODO, then check it: pollcast --check --config {out_name}"
        ),
        "",
    );
    comment(
        &mut o,
        "Keys not written here have their defaults; the shipped config.toml documents every key.",
        "",
    );
    o.push_str("#\n");
    comment(
        &mut o,
        "Write-through refresh: a POST, PUT, PATCH or DELETE that passes through pollcast to a \
         path at or under a feed's poll path, and succeeds, makes that feed poll at once. Each \
         feed lists the document's writes that do so; send them through pollcast, not straight \
         to the API. Writes elsewhere reach subscribers at the next poll (or ask for one: POST \
         /_pollcast/refresh/<name>).",
        "",
    );
    if !plan.skipped.is_empty() {
        o.push_str("#\n# GET operations not turned into feeds:\n");
        for s in &plan.skipped {
            comment(&mut o, &format!("  {s}"), "    ");
        }
    }
    o.push_str("\n[server]\n# Address clients (EventSource and pass-through) connect to.\n");
    o.push_str("listen = \"127.0.0.1:8080\"\n\n[upstream]\n");
    match &plan.upstream_note {
        Some(n) => comment(&mut o, n, ""),
        None => o.push_str("# The API pollcast sits in front of.\n"),
    }
    let _ = writeln!(o, "url = {}", s(&plan.upstream));
    for f in &plan.feeds {
        o.push('\n');
        feed(&mut o, f);
    }
    o
}

fn feed(o: &mut String, f: &FeedPlan) {
    comment(o, &f.from, "  ");
    if f.writes.is_empty() {
        o.push_str("# Write-through triggers: none in the document.\n");
    } else {
        o.push_str("# Write-through triggers:\n");
        for w in &f.writes {
            let _ = writeln!(o, "#   {w}");
        }
    }
    for n in &f.notes {
        comment(o, n, "  ");
    }
    o.push_str("[[feeds]]\n");
    let _ = writeln!(o, "name = {}", s(&f.name));
    let _ = writeln!(o, "poll = {}", s(&f.poll));
    if f.sse.contains('{') {
        o.push_str("# The path parameters of poll, filled from the same segments of this path.\n");
    }
    let _ = writeln!(o, "sse = {}", s(&f.sse));
    let _ = writeln!(o, "interval = \"2s\"");
    comment(o, &format!("{}.", capital(&f.items_why)), "");
    let _ = writeln!(o, "items = {}", s(&f.items));
    match &f.id {
        IdPick::Found(pointer, why) => {
            let of = f
                .item_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            comment(o, &format!("Each item's id{of}: {why}."), "");
            let _ = writeln!(o, "id = {}", s(pointer));
        }
        IdPick::Unknown(why) => {
            comment(
                o,
                &format!(
                    "TODO: which field identifies an item? ({}.) Set id to its JSON Pointer (e.g. \"/sku\"); \"/id\" is only the default, and items without it are skipped with a warning.",
                    capital(why)
                ),
                "  ",
            );
            o.push_str("id = \"/id\"\n");
        }
    }
    match &f.query {
        Some(q) if q.is_empty() => {
            o.push_str("# The document declares no query parameters: any other gets 400.\n");
            o.push_str("query = []\n");
        }
        Some(q) => {
            o.push_str("# The declared query parameters; any other gets 400.\n");
            let list: Vec<String> = q.iter().map(|p| s(p)).collect();
            let _ = writeln!(o, "query = [{}]", list.join(", "));
        }
        None => {}
    }
    for n in &f.auth_notes {
        comment(o, n, "  ");
    }
    o.push_str("auth = \"forward\"\n");
    if let Some(t) = &f.token_param {
        let _ = writeln!(o, "token_param = {}", s(t));
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
