//! Path patterns with parameters: `sse = "/sse/jobs/{job_id}"` matches
//! `/sse/jobs/42` and `poll = "/api/jobs/{job_id}"` becomes `/api/jobs/42`.
//!
//! This module owns the pattern syntax (a parameter is a whole path segment,
//! `{name}`), matching a request path against it, and filling a poll path
//! with the values. A parameter value is one raw (still percent-encoded)
//! segment of the request path, never empty. [`check_value`] refuses values
//! that an upstream could read as a dot-segment or a separator (`..`,
//! `%2e%2E`, `%2f`, `\`, `..;x`, control characters), so a filled-in path
//! never reaches another upstream path than the pattern names, whether or not
//! the upstream normalises paths. It also owns [`normalize`], the RFC 3986
//! comparison form of a path (used by write-through). It must never know
//! about feeds or HTTP.

use std::borrow::Cow;

/// Why a path parameter value is refused (a 400 to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("a path parameter may not be `.` or `..`, in any encoding")]
    DotSegment,
    #[error("a path parameter may not contain `/`, `\\`, `?` or `#`, in any encoding")]
    Separator,
    #[error("a path parameter may not contain control characters")]
    Control,
}

/// Refuse a raw path parameter value that could leave its path segment.
///
/// The value is checked as sent and after each of up to three rounds of
/// percent-decoding (an upstream behind another proxy may decode twice). In
/// every round: no `/`, `\`, `?` or `#`, no control character (NUL included), and
/// neither the value nor its part before a `;` (Tomcat's path parameters
/// make `..;x` a `..`) may be `.` or `..`.
pub fn check_value(raw: &str) -> Result<(), BadValue> {
    let mut cur: Cow<'_, [u8]> = Cow::Borrowed(raw.as_bytes());
    for _ in 0..4 {
        if cur.iter().any(|&b| matches!(b, b'/' | b'\\' | b'?' | b'#')) {
            return Err(BadValue::Separator);
        }
        if cur.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(BadValue::Control);
        }
        let before_params = cur.split(|&b| b == b';').next().unwrap_or(&[]);
        if [&cur[..], before_params]
            .iter()
            .any(|s| *s == b"." || *s == b"..")
        {
            return Err(BadValue::DotSegment);
        }
        let next: Cow<'_, [u8]> = percent_encoding::percent_decode(&cur).into();
        if next[..] == cur[..] {
            break;
        }
        cur = Cow::Owned(next.into_owned());
    }
    Ok(())
}

/// A path in RFC 3986's comparison form: percent-encoded unreserved
/// characters decoded (`%7E` -> `~`, `%2e` -> `.`), other percent-encodings
/// upper-cased (`%2f` -> `%2F`, still a literal byte, not a separator), then
/// dot-segments removed (5.2.4), so `/api/jobs/%2e%2e/track` is `/api/track`.
pub fn normalize(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push(b[i + 1].to_ascii_uppercase() as char);
                    out.push(b[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        // Copy up to the next `%` whole (keeps multi-byte characters intact).
        let end = path[i + 1..].find('%').map_or(b.len(), |n| n + i + 1);
        out.push_str(&path[i..end]);
        i = end;
    }
    remove_dot_segments(&out)
}

/// RFC 3986 5.2.4, on a path alone.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut out = String::with_capacity(path.len());
    let pop = |out: &mut String| match out.rfind('/') {
        Some(n) => out.truncate(n),
        None => out.clear(),
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../") {
            input = rest;
        } else if let Some(rest) = input.strip_prefix("./") {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") {
            input = &input[3..];
            pop(&mut out);
        } else if input == "/.." {
            input = "/";
            pop(&mut out);
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |n| n + start);
            out.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    out
}

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

    pub(crate) fn has_params(&self) -> bool {
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
                // Values are judged by `check_value` after routing, so a
                // traversal attempt on an SSE path is refused (400), not
                // passed through.
                Segment::Param(_) if got.is_empty() => return None,
                Segment::Param(_) => values.push(got.to_owned()),
            }
        }
        segs.peek().is_none().then_some(values)
    }

    /// The literal segments before the first parameter (`/api/boards` of
    /// `/api/boards/{board}/posts`), and the number of segments.
    pub fn literal_prefix(&self) -> (String, usize) {
        let mut prefix = String::new();
        for s in &self.segments {
            match s {
                Segment::Lit(l) => {
                    prefix.push('/');
                    prefix.push_str(l);
                }
                Segment::Param(_) => break,
            }
        }
        (prefix, self.segments.len())
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
        for bad in ["/sse/jobs", "/sse/jobs/", "/sse/jobs/1/2", "/sse/job/1"] {
            assert_eq!(sse.matches(bad), None, "{bad}");
        }
        // Matched, then refused by `check_value` (a 400, not a pass-through).
        assert_eq!(sse.matches("/sse/jobs/.."), Some(vec!["..".to_owned()]));
        let plain = Pattern::parse("/a/b").expect("ok");
        assert!(!plain.has_params());
        assert_eq!(plain.fill(&[], &[]), "/a/b");
    }

    #[test]
    fn values_that_could_leave_their_segment_are_refused() {
        for bad in [
            ".",
            "..",
            "%2e",
            "%2E%2e",
            ".%2E",
            "%2e.",
            "%252e%252e",
            "..;x",
            "%2e%2e;jsessionid=1",
        ] {
            assert_eq!(check_value(bad), Err(BadValue::DotSegment), "{bad}");
        }
        for bad in [
            "a%2fb",
            "a%2Fb",
            "a\\b",
            "%5c",
            "%5C..",
            "%252f",
            "a%25252Fb",
            "a?b",
            "%3F",
            "%23x",
        ] {
            assert_eq!(check_value(bad), Err(BadValue::Separator), "{bad}");
        }
        for bad in ["%00", "a%0Ab", "%7f", "%09", "%2500"] {
            assert_eq!(check_value(bad), Err(BadValue::Control), "{bad}");
        }
        for ok in [
            "42",
            "a.b",
            "...",
            "%2e%2e%2e",
            "caf%C3%A9",
            "a%20b",
            "x;y",
            "%25",
        ] {
            assert_eq!(check_value(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn normalize_decodes_unreserved_and_removes_dot_segments() {
        for (raw, want) in [
            ("/api/jobs/%2e%2e/track", "/api/track"),
            ("/api/jobs/%2E%2E", "/api/"),
            ("/api/./jobs/7", "/api/jobs/7"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/../../x", "/x"),
            ("/api/jobs/", "/api/jobs/"),
            ("/api/%7Ejobs/%41", "/api/~jobs/A"),
            ("/api/jobs%2f..", "/api/jobs%2F.."),
            ("/api/caf%c3%a9", "/api/caf%C3%A9"),
            ("/api/100%", "/api/100%"),
            ("/api/%zz/é", "/api/%zz/é"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
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
