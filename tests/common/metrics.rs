//! Scraping pollcast's operator endpoints over HTTP, the way Prometheus and
//! an operator do: the metrics text and the stats JSON, from the admin
//! listener, and one series' value out of the text.
//!
//! The only place tests fetch `/_pollcast/metrics` or `/_pollcast/stats`
//! (the admin-listener tests, which check where those paths answer, aside).

use std::net::SocketAddr;

use serde_json::Value;

use super::within;

/// The address of an in-process pollcast's operator endpoints: its admin
/// listener, or the main one when `[admin] listen = ""`.
pub fn admin_addr(pc: &pollcast::Running) -> SocketAddr {
    pc.admin_addr.unwrap_or(pc.addr)
}

/// A URL of pollcast's operator endpoints (metrics, status, stats, refresh):
/// on the admin listener, where they are served by default.
pub fn admin_url(pc: &pollcast::Running, path: &str) -> String {
    format!("http://{}{path}", admin_addr(pc))
}

/// The text of pollcast's `/_pollcast/metrics`, scraped over HTTP from the
/// admin listener (as Prometheus does).
pub async fn scrape_metrics(pc: &pollcast::Running) -> String {
    scrape_metrics_at(admin_addr(pc)).await
}

/// The text of `/_pollcast/metrics` on the listener at `addr` (e.g. a child
/// process's admin listener), checked to be a 200 in the OpenMetrics format.
pub async fn scrape_metrics_at(addr: SocketAddr) -> String {
    let url = format!("http://{addr}/_pollcast/metrics");
    let r = within("scrape metrics", reqwest::get(url))
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200, "metrics answered");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "metrics content type: {ct:?}"
    );
    within("metrics body", r.text()).await.expect("body")
}

/// The JSON of pollcast's `/_pollcast/stats`, from the admin listener.
pub async fn scrape_stats(pc: &pollcast::Running) -> Value {
    scrape_stats_at(admin_addr(pc)).await
}

/// The JSON of `/_pollcast/stats` on the listener at `addr` (e.g. a child
/// process's admin listener).
pub async fn scrape_stats_at(addr: SocketAddr) -> Value {
    let url = format!("http://{addr}/_pollcast/stats");
    let r = within("scrape stats", reqwest::get(url))
        .await
        .expect("stats");
    assert_eq!(r.status(), 200, "stats answered");
    within("stats body", r.json()).await.expect("stats JSON")
}

/// One series' value in a metrics text, the series written exactly as
/// pollcast writes it, e.g. `pollcast_limit_refusals_total{limit="max_feeds"}`.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// [`series`], failing the test (showing the whole text) when it is missing.
pub fn must_series(text: &str, name: &str) -> f64 {
    series(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// One series' value now: scraped from the admin listener, failing the test
/// when the series is missing.
pub async fn metric(pc: &pollcast::Running, name: &str) -> f64 {
    must_series(&scrape_metrics(pc).await, name)
}

/// The value of the series `name` whose labels are exactly `labels` (in any
/// order), e.g. `metric_value(text, "pollcast_polls_total", &[("feed", "jobs"),
/// ("outcome", "ok")])`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let sample = Sample::parse(line)?;
        let same = sample.name == name
            && sample.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v));
        same.then_some(sample.value)
    })
}

/// One sample line of the text format: `name{label="value",...} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    /// `None` for comments, blank lines and anything that is not a sample.
    fn parse(line: &'a str) -> Option<Self> {
        if line.starts_with('#') {
            return None;
        }
        let end = line.find(['{', ' '])?;
        let (name, mut rest) = line.split_at(end);
        let mut labels = Vec::new();
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = inner.split_once("=\"")?;
                let (value, after) = unescape_label(after)?;
                labels.push((key, value));
                inner = after.strip_prefix(',').unwrap_or(after);
            }
        }
        let value = rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()?;
        Some(Self {
            name,
            labels,
            value,
        })
    }
}

/// A label value up to its closing quote (`\\`, `\"` and `\n` unescaped),
/// and what follows the quote.
fn unescape_label(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}
