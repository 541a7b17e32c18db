//! Path patterns with parameters: `sse = "/sse/jobs/{job_id}"` matches
//! `/sse/jobs/42` and `poll = "/api/jobs/{job_id}"` becomes `/api/jobs/42`.
//!
//! This module owns the pattern syntax (a parameter is a whole path segment,
//! `{name}`), matching a request path against it, and filling a poll path
//! with the values. A parameter value is one raw (still percent-encoded)
//! segment of the request path, never empty, `.` or `..`, so a value can never
//! reach another upstream path than the pattern names. It must never know
//! about feeds or HTTP.

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Param(String),
}

impl Pattern {
    /// Parse `/a/{b}/c`; braces are only allowed around a whole segment.
    pub fn parse(path: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in path.split('/').skip(1) {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "`{{{name}}}` in `{path}`: a parameter name uses only letters, digits, `_` and `-`"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("`{{{name}}}` appears twice in `{path}`"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "`{seg}` in `{path}`: a parameter must be a whole path segment, like `/{{job_id}}`"
                ));
            } else {
                segments.push(Segment::Lit(seg.to_owned()));
            }
        }
        Ok(Self { segments })
    }

    /// Parameter names, in order.
    pub fn params(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) => Some(n.clone()),
                Segment::Lit(_) => None,
            })
            .collect()
    }

    pub fn has_params(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Param(_)))
    }

    /// The parameter values when `path` matches, in [`Pattern::params`] order.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let mut values = Vec::new();
        let mut segs = path.split('/');
        if segs.next() != Some("") {
            return None;
        }
        let mut segs = segs.peekable();
        for want in &self.segments {
            let got = segs.next()?;
            match want {
                Segment::Lit(l) if l == got => {}
                Segment::Lit(_) => return None,
                Segment::Param(_) if got.is_empty() || got == "." || got == ".." => return None,
                Segment::Param(_) => values.push(got.to_owned()),
            }
        }
        segs.peek().is_none().then_some(values)
    }

    /// This pattern with `{name}` replaced by the value of the same name.
    pub fn fill(&self, names: &[String], values: &[String]) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Lit(l) => out.push_str(l),
                Segment::Param(n) => {
                    if let Some(i) = names.iter().position(|x| x == n) {
                        out.push_str(values.get(i).map_or("", String::as_str));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_and_fill() {
        let sse = Pattern::parse("/sse/jobs/{job_id}").expect("ok");
        let poll = Pattern::parse("/api/v1/jobs/{job_id}/status").expect("ok");
        assert_eq!(sse.params(), ["job_id"]);
        let v = sse.matches("/sse/jobs/4%202").expect("match");
        assert_eq!(v, ["4%202"]);
        assert_eq!(poll.fill(&sse.params(), &v), "/api/v1/jobs/4%202/status");
        for bad in [
            "/sse/jobs",
            "/sse/jobs/",
            "/sse/jobs/1/2",
            "/sse/job/1",
            "/sse/jobs/..",
            "/sse/jobs/.",
        ] {
            assert_eq!(sse.matches(bad), None, "{bad}");
        }
        let plain = Pattern::parse("/a/b").expect("ok");
        assert!(!plain.has_params());
        assert_eq!(plain.fill(&[], &[]), "/a/b");
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(Pattern::parse("/a/x{id}")
            .unwrap_err()
            .contains("whole path segment"));
        assert!(Pattern::parse("/a/{}").is_err());
        assert!(Pattern::parse("/a/{id}/{id}")
            .unwrap_err()
            .contains("twice"));
    }
}
