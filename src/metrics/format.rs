//! Which text format a scrape is answered in: OpenMetrics 1.0 (what
//! `prometheus-client` encodes, and what Prometheus asks for first), or
//! Prometheus' classic text format (0.0.4) for scrapers and tools that read
//! only that, such as `promtool check metrics`.
//!
//! This module owns the negotiation and the rewrite from one to the other;
//! it never adds, drops or renames a series.

/// The text format a scrape is answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for first, and the default.
    OpenMetrics,
    /// Prometheus' classic text format (0.0.4), for scrapers and tools that
    /// read only that (`promtool check metrics`, older agents).
    Prometheus,
}

impl Format {
    /// The format for a request's `Accept`: the classic one only when the
    /// scraper accepts `text/plain` and not OpenMetrics; OpenMetrics
    /// otherwise (no `Accept`, `*/*`, or OpenMetrics listed at all).
    pub fn negotiate(accept: Option<&http::HeaderValue>) -> Self {
        let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
        let lower = accept.to_ascii_lowercase();
        if !lower.contains("application/openmetrics-text") && lower.contains("text/plain") {
            Self::Prometheus
        } else {
            Self::OpenMetrics
        }
    }

    /// The `Content-Type` of a scrape answered in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => super::CONTENT_TYPE,
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as Prometheus' classic text format: a counter family is
/// named with its `_total` (as its samples are), and the `# UNIT` and
/// `# EOF` lines, which the classic format does not have, are left out.
pub(super) fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let counter = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let (name, rest) = line.strip_prefix(p)?.split_once(' ')?;
            counters.contains(name).then_some((p, name, rest))
        });
        match counter {
            Some((p, name, rest)) => {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_openmetrics_unless_they_ask_for_the_classic_format_only() {
        let f = |a: &'static str| Format::negotiate(Some(&http::HeaderValue::from_static(a)));
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(f("*/*"), Format::OpenMetrics);
        assert_eq!(
            f("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(f("text/plain;version=0.0.4"), Format::Prometheus);
        assert_eq!(f("text/plain"), Format::Prometheus);
    }

    #[test]
    fn the_classic_format_names_counters_with_total_and_has_no_unit_or_eof() {
        let om = "# HELP a_seconds Time.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\n\
                  a_seconds_total 1.5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_seconds_total Time.\n# TYPE a_seconds_total counter\n\
             a_seconds_total 1.5\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }
}
