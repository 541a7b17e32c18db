//! One validating pass over a JSON body that finds the items array and, in
//! each element, the id — without building any value.
//!
//! This module owns the byte-level reading of JSON (RFC 8259 grammar: strings,
//! escapes, numbers, literals, nesting) for the hot path of every poll: the
//! body is walked once, every byte checked, and only spans (`Range<usize>`)
//! are recorded. Reading a 10 MB list this way costs a fraction of building it
//! into `serde_json` values, and of re-parsing each item to find its id. It
//! must never allocate per value, never recurse deeper than [`MAX_DEPTH`]
//! (bodies come from the network), and never decide what an id means (that is
//! `extract`). Text must be valid UTF-8 before it gets here.

use std::ops::Range;

/// Nesting deeper than this is refused, as serde_json does, so a hostile body
/// cannot exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// Where the items array was, and its elements.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Whether a value exists at the items pointer.
    pub items_present: bool,
    /// Whether that value is an array.
    pub items_is_array: bool,
    /// Each element's span, and the span of the value at the id pointer in it.
    pub elements: Vec<(Range<usize>, Option<Range<usize>>)>,
}

/// The body is not JSON; the message says where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} at byte {at}")]
pub(crate) struct SyntaxError {
    pub what: &'static str,
    pub at: usize,
}

/// Validate `text` as one JSON document and locate the items at pointer
/// tokens `items` and, within each, the value at pointer tokens `id`.
pub(crate) fn scan(text: &[u8], items: &[String], id: &[String]) -> Result<Found, SyntaxError> {
    let mut s = Scanner {
        b: text,
        pos: 0,
        items,
        id,
        found: Found::default(),
    };
    s.ws();
    s.value(Role::Items(0), 0)?;
    s.ws();
    if s.pos != s.b.len() {
        return Err(s.err("trailing characters after the document"));
    }
    Ok(s.found)
}

/// What the value being read is to the caller.
#[derive(Clone, Copy)]
enum Role {
    /// Nothing of interest inside.
    Other,
    /// `n` tokens of the items pointer matched on the way here.
    Items(usize),
    /// Inside element `index`, `n` tokens of the id pointer matched.
    Element { index: usize, n: usize },
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    items: &'a [String],
    id: &'a [String],
    found: Found,
}

impl Scanner<'_> {
    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError { what, at: self.pos }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, role: Role, depth: usize) -> Result<(), SyntaxError> {
        let role = match role {
            Role::Items(n) if n == self.items.len() => {
                if self.found.items_present {
                    // A repeated key: the first value wins, as in serde_json's lookups.
                    Role::Other
                } else {
                    self.found.items_present = true;
                    if self.peek() == Some(b'[') {
                        self.found.items_is_array = true;
                        return self.items_array(depth);
                    }
                    Role::Other
                }
            }
            Role::Element { index, n } if n == self.id.len() => {
                let start = self.pos;
                self.value(Role::Other, depth)?;
                let slot = &mut self.found.elements[index].1;
                if slot.is_none() {
                    *slot = Some(start..self.pos);
                }
                return Ok(());
            }
            r => r,
        };
        match self.peek() {
            Some(b'{') => self.object(role, depth),
            Some(b'[') => self.array(role, depth),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of body")),
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(depth + 1)
    }

    /// The role of the member `key` (raw, without quotes) of an object with `role`.
    fn member_role(&self, role: Role, key: &[u8]) -> Role {
        let (tokens, n) = match role {
            Role::Other => return Role::Other,
            Role::Items(n) => (self.items, n),
            Role::Element { n, .. } => (self.id, n),
        };
        if !key_is(key, tokens[n].as_str()) {
            return Role::Other;
        }
        match role {
            Role::Items(n) => Role::Items(n + 1),
            Role::Element { index, n } => Role::Element { index, n: n + 1 },
            Role::Other => Role::Other,
        }
    }

    /// The role of element `i` of an array with `role`.
    fn index_role(&self, role: Role, i: usize) -> Role {
        let (tokens, n) = match role {
            Role::Other => return Role::Other,
            Role::Items(n) => (self.items, n),
            Role::Element { n, .. } => (self.id, n),
        };
        if tokens[n].parse::<usize>().ok() != Some(i) {
            return Role::Other;
        }
        match role {
            Role::Items(n) => Role::Items(n + 1),
            Role::Element { index, n } => Role::Element { index, n: n + 1 },
            Role::Other => Role::Other,
        }
    }

    /// Step into the object or array at `pos`: `None` when it is empty (its
    /// closing `close` consumed too), else the depth inside it.
    fn open(&mut self, depth: usize, close: u8) -> Result<Option<usize>, SyntaxError> {
        let depth = self.enter(depth)?;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(None);
        }
        Ok(Some(depth))
    }

    fn object(&mut self, role: Role, depth: usize) -> Result<(), SyntaxError> {
        let Some(depth) = self.open(depth, b'}')? else {
            return Ok(());
        };
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected `:`"));
            }
            self.pos += 1;
            self.ws();
            let child = self.member_role(role, &self.b[key]);
            self.value(child, depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, role: Role, depth: usize) -> Result<(), SyntaxError> {
        let Some(depth) = self.open(depth, b']')? else {
            return Ok(());
        };
        let mut i = 0;
        loop {
            let child = self.index_role(role, i);
            self.value(child, depth)?;
            i += 1;
            if self.end_of_element()? {
                return Ok(());
            }
        }
    }

    /// The items array: like [`Self::array`], recording each element.
    fn items_array(&mut self, depth: usize) -> Result<(), SyntaxError> {
        let Some(depth) = self.open(depth, b']')? else {
            return Ok(());
        };
        loop {
            let index = self.found.elements.len();
            let start = self.pos;
            self.found.elements.push((start..start, None));
            self.value(Role::Element { index, n: 0 }, depth)?;
            self.found.elements[index].0 = start..self.pos;
            if self.end_of_element()? {
                return Ok(());
            }
        }
    }

    /// After an array element: `true` at `]`, `false` after `,`.
    fn end_of_element(&mut self) -> Result<bool, SyntaxError> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.ws();
                Ok(false)
            }
            Some(b']') => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.err("expected `,` or `]`")),
        }
    }

    /// A string starting at the opening quote; returns the span between the quotes.
    fn string(&mut self) -> Result<Range<usize>, SyntaxError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            self.pos = plain_run(self.b, self.pos);
            match self.peek() {
                Some(b'"') => {
                    let span = start..self.pos;
                    self.pos += 1;
                    return Ok(span);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            let hex = self.b.get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("invalid \\u escape"));
                            }
                            self.pos += 5;
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }
}

/// The first position at or after `pos` where a byte of a string needs a
/// look (`"`, `\\` or a control character), or a position close to the end
/// of `b`; plain string bytes are skipped 16 (SSE2) or 8 (SWAR) at a time.
#[inline]
fn plain_run(b: &[u8], mut pos: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        pos = sse2::plain_run(b, pos);
    }
    while let Some(chunk) = b.get(pos..pos + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if needs_attention(u64::from_le_bytes(w)) {
            break;
        }
        pos += 8;
    }
    pos
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// SSE2 is part of the x86_64 baseline, so no runtime detection is needed.
    #[inline]
    pub(crate) fn plain_run(b: &[u8], mut pos: usize) -> usize {
        while let Some(chunk) = b.get(pos..pos + 16) {
            // SAFETY: `chunk` is 16 readable bytes (loadu has no alignment
            // requirement), and SSE2 is always available on x86_64.
            let mask = unsafe {
                let x = _mm_loadu_si128(chunk.as_ptr().cast());
                let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
                // x >= 0x20 (unsigned) exactly where max(x, 0x20) == x.
                let space = _mm_set1_epi8(0x20);
                let printable = _mm_cmpeq_epi8(_mm_max_epu8(x, space), x);
                let special = _mm_or_si128(quote, backslash);
                (_mm_movemask_epi8(special) as u32)
                    | (!(_mm_movemask_epi8(printable) as u32) & 0xffff)
            };
            if mask != 0 {
                return pos + mask.trailing_zeros() as usize;
            }
            pos += 16;
        }
        pos
    }
}

/// Whether any byte of `w` is `"`, `\` or a control character (< 0x20).
#[inline]
fn needs_attention(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    // Bytes >= 0x80 (UTF-8) must not count as "less than 0x20": mask them out.
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64)) | below_space) != 0
}

/// Whether a raw (still escaped) key equals the pointer token.
fn key_is(raw: &[u8], token: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == token.as_bytes();
    }
    let quoted = [b"\"", raw, b"\""].concat();
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn ok(text: &str) -> bool {
        scan(text.as_bytes(), &[], &toks(&["id"])).is_ok()
    }

    #[test]
    fn agrees_with_serde_json_on_validity() {
        let cases = [
            "[]",
            " [ 1 , -2.5e+3 , 0 , true , false , null ] ",
            r#"{"a":{"b":[{},[],""]},"c":"\u00e9\n\"\\\/\b\f\r\t"}"#,
            "\"caf\u{e9} \u{1F600}\"",
            "-0.0e0",
            "[1,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{1:2}",
            "[\"tab\there\"]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "[\"open",
            "[tru]",
            "[nul]",
            "[1] [2]",
            "",
            "   ",
            "[[[[",
            "{\"a\":[1,{\"b\":\"\\\"]\"}]}",
            "\"12345678\\\"12345678\"",
            "\"\u{7f}\u{80}\u{ff}1234567\"",
        ];
        for c in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(c).is_ok();
            assert_eq!(ok(c), serde, "{c:?}");
        }
    }

    #[test]
    fn every_one_byte_mutation_agrees_with_serde_json_and_never_panics() {
        let base = br#"{"generated":1,"items":[{"id":1,"s":"a\"b\\c\u00e9 long enough to span words","n":[-1.5e3,0,true,null]},{"id":"x","o":{}}]}"#;
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"{}[]\",:0123456789-+.eEtrufalsn \\/u\x01\n\x7fab";
        for _ in 0..20_000 {
            let mut m = base.to_vec();
            let at = rng.usize(..m.len());
            match rng.u8(..3) {
                0 => m[at] = alphabet[rng.usize(..alphabet.len())],
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, alphabet[rng.usize(..alphabet.len())]),
            }
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&m).is_ok();
            let ours = scan(&m, &toks(&["items"]), &toks(&["id"])).is_ok();
            assert_eq!(ours, serde, "{}", String::from_utf8_lossy(&m));
        }
    }

    #[test]
    fn control_characters_are_found_at_every_position_of_a_word() {
        for i in 0..20 {
            let mut s = "\"".to_owned() + &"a".repeat(i) + "\u{1}" + &"b".repeat(9) + "\"";
            assert!(!ok(&s), "{i}");
            s = s.replace('\u{1}', "\u{e9}");
            assert!(ok(&s), "{i}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            scan(deep.as_bytes(), &[], &[])
                .map(|_| ())
                .unwrap_err()
                .what,
            "nesting too deep"
        );
        let fine = "[".repeat(100) + &"]".repeat(100);
        assert!(scan(fine.as_bytes(), &[], &[]).is_ok());
    }

    #[test]
    fn finds_items_and_ids_first_match_wins() {
        let text = r#"{"items":[{"x":{"id":9},"id":1,"id":2},{"meta":[0,{"k":"a"}]},7],"items":[{"id":3}]}"#;
        let f = scan(text.as_bytes(), &toks(&["items"]), &toks(&["id"])).expect("valid");
        assert!(f.items_present && f.items_is_array);
        let spans: Vec<(&str, Option<&str>)> = f
            .elements
            .iter()
            .map(|(e, id)| (&text[e.clone()], id.clone().map(|r| &text[r])))
            .collect();
        assert_eq!(
            spans,
            [
                (r#"{"x":{"id":9},"id":1,"id":2}"#, Some("1")),
                (r#"{"meta":[0,{"k":"a"}]}"#, None),
                ("7", None),
            ]
        );
        let f = scan(
            text.as_bytes(),
            &toks(&["items"]),
            &toks(&["meta", "1", "k"]),
        )
        .expect("ok");
        assert_eq!(f.elements[1].1.clone().map(|r| &text[r]), Some("\"a\""));
    }

    #[test]
    fn escaped_keys_match_their_value() {
        let text = r#"{"it\u0065ms":[{"\u0069d":5}]}"#;
        let f = scan(text.as_bytes(), &toks(&["items"]), &toks(&["id"])).expect("ok");
        assert_eq!(f.elements.len(), 1);
        assert_eq!(f.elements[0].1.clone().map(|r| &text[r]), Some("5"));
    }

    #[test]
    fn missing_and_non_array_items_are_reported() {
        let f = scan(br#"{"a":1}"#, &toks(&["items"]), &[]).expect("ok");
        assert!(!f.items_present);
        let f = scan(br#"{"items":{}}"#, &toks(&["items"]), &[]).expect("ok");
        assert!(f.items_present && !f.items_is_array);
    }
}
