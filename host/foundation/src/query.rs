//! What one search may ask of a store, checked before any backend parses the
//! query, so that both backends refuse the same requests for the same reason.
//!
//! tantivy's query grammar (0.26) parses a group twice when it holds one
//! item or fails inside, so each level of parentheses doubles the work on
//! everything inside it: 25 nested parentheses around one word kept a core
//! busy for minutes, and even 8 levels around 4 KiB of words took 0.2-0.3 s.
//! Measured on the project's machine (docs/benchmarks/journal.md, "query grammar"),
//! parsing takes about 0.25 µs × bytes × 2^depth, so the length a query may
//! have halves with each level past the second; tabs and newlines made the
//! field-name parser quadratic (17 s at depth 8), so all whitespace is made a
//! space first; long `NOT NOT …` chains are quadratic after parsing. Within
//! these limits no input found took more than about 3 ms to parse.
//!
//! The time a search may take is bounded by each backend (a deadline checked
//! while collecting, Elasticsearch's `timeout`).

use std::time::Duration;

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of parentheses accepted.
pub const MAX_QUERY_DEPTH: usize = 8;
/// `bytes << depth` at most: 4096 bytes up to 2 levels, then half as many per level.
pub const QUERY_BUDGET: usize = 16_384;
/// `NOT`s one query may hold.
pub const MAX_QUERY_NOTS: usize = 64;
/// Words (runs of letters and digits: terms, field names, numbers) one
/// query may hold; each is a clause or a term the store looks up. As
/// Elasticsearch's `indices.query.bool.max_clause_count` (1024 until 8.0),
/// with field names counted too.
pub const MAX_QUERY_TERMS: usize = 1024;
/// Words one quoted phrase may hold: a phrase's terms are matched position
/// by position in every document that has them all, so its work grows with
/// its length (a 2,030-word phrase that matched nothing took 3.5 s of a core
/// on 300,000 documents).
pub const MAX_PHRASE_TERMS: usize = 32;
/// Words all the quoted phrases of one query may hold together: a phrase's
/// scorer does its scan while it is built, in one step the search deadline
/// cannot cut, so their sum bounds how far a search can overrun its bound.
pub const MAX_PHRASE_TERMS_IN_QUERY: usize = 256;
/// Most documents one request may return.
pub const MAX_LIMIT: usize = 1000;
/// `offset + limit` at most: deeper pages cost the store more than they are worth.
pub const MAX_WINDOW: usize = 10_000;

/// One search, as the host asks a store for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// In the store's query-string syntax; empty matches all.
    pub query: String,
    /// Documents to return (the total is counted either way).
    pub limit: usize,
    /// Matching documents to skip first, for paging.
    pub offset: usize,
    /// How long the store may work on it.
    pub timeout: Duration,
}

/// Why a search was refused before any parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryRefused {
    #[error("the query has {actual} bytes; at most {MAX_QUERY_BYTES} are accepted (query length limit)")]
    TooLong { actual: usize },
    #[error(
        "the query nests parentheses {actual} levels deep; at most {MAX_QUERY_DEPTH} are accepted (query depth limit): write the \
         condition with fewer parentheses"
    )]
    TooDeep { actual: usize },
    #[error(
        "the query has {bytes} bytes inside {depth} levels of parentheses; at that depth at most {allowed} bytes are accepted \
         (query depth limit: the work of parsing doubles with each level)"
    )]
    TooLongForDepth { bytes: usize, depth: usize, allowed: usize },
    #[error("the query has {actual} NOTs; at most {MAX_QUERY_NOTS} are accepted (query NOT limit)")]
    TooManyNots { actual: usize },
    #[error(
        "the query has the control character U+{code:04X} at byte {at}; field names and terms cannot hold control \
         characters (query character rule)"
    )]
    ControlCharacter { code: u32, at: usize },
    #[error("the query has {actual} terms; at most {MAX_QUERY_TERMS} are accepted (query term limit): split it into several")]
    TooManyTerms { actual: usize },
    #[error(
        "a quoted phrase of the query has {actual} terms; at most {MAX_PHRASE_TERMS} are accepted (phrase term limit): \
         quote a shorter part of it"
    )]
    PhraseTooLong { actual: usize },
    #[error(
        "the query's quoted phrases have {actual} terms in all; at most {MAX_PHRASE_TERMS_IN_QUERY} are accepted (phrase term \
         limit): quote fewer or shorter phrases"
    )]
    TooManyPhraseTerms { actual: usize },
    #[error("limit {actual} is above the cap of {MAX_LIMIT} documents per request (limit cap): page through with offset")]
    LimitTooHigh { actual: usize },
    #[error(
        "offset {offset} with limit {limit} reaches past document {MAX_WINDOW} (result window cap): narrow the query instead of \
         paging that deep"
    )]
    WindowTooDeep { offset: usize, limit: usize },
}

impl SearchRequest {
    /// The request as the stores get it: every whitespace character of the
    /// query made a plain space (a tab or a newline is never meaningful in
    /// the query syntax, and made tantivy's parser quadratic), then checked
    /// against the limits above; the first one broken is the error.
    pub fn checked(mut self) -> Result<SearchRequest, QueryRefused> {
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(QueryRefused::TooLong { actual: self.query.len() });
        }
        if self.query.chars().any(|c| c.is_whitespace() && c != ' ') {
            self.query = self.query.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
        }
        check(&self)?;
        Ok(self)
    }
}

/// Checks a search against the limits above; the first one broken is the
/// error. [`SearchRequest::checked`] also normalises the whitespace.
pub fn check(request: &SearchRequest) -> Result<(), QueryRefused> {
    let query = &request.query;
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryRefused::TooLong { actual: query.len() });
    }
    let depth = nesting_depth(query);
    if depth > MAX_QUERY_DEPTH {
        return Err(QueryRefused::TooDeep { actual: depth });
    }
    if query.len() << depth > QUERY_BUDGET {
        return Err(QueryRefused::TooLongForDepth { bytes: query.len(), depth, allowed: QUERY_BUDGET >> depth });
    }
    let nots = query.matches("NOT").count();
    if nots > MAX_QUERY_NOTS {
        return Err(QueryRefused::TooManyNots { actual: nots });
    }
    // A NUL in a field name reached an assertion of tantivy's JSON paths,
    // whose separators are control bytes; no query needs one.
    if let Some((at, c)) = query.char_indices().find(|(_, c)| c.is_control() && !c.is_whitespace()) {
        return Err(QueryRefused::ControlCharacter { code: u32::from(c), at });
    }
    let terms = count_terms(query);
    if terms.all > MAX_QUERY_TERMS {
        return Err(QueryRefused::TooManyTerms { actual: terms.all });
    }
    if terms.longest_phrase > MAX_PHRASE_TERMS {
        return Err(QueryRefused::PhraseTooLong { actual: terms.longest_phrase });
    }
    if terms.in_phrases > MAX_PHRASE_TERMS_IN_QUERY {
        return Err(QueryRefused::TooManyPhraseTerms { actual: terms.in_phrases });
    }
    if request.limit > MAX_LIMIT {
        return Err(QueryRefused::LimitTooHigh { actual: request.limit });
    }
    if request.offset.saturating_add(request.limit) > MAX_WINDOW {
        return Err(QueryRefused::WindowTooDeep { offset: request.offset, limit: request.limit });
    }
    Ok(())
}

/// The words of a query, of its longest quoted phrase and of all its phrases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub all: usize,
    pub longest_phrase: usize,
    pub in_phrases: usize,
}

/// Counts the words of `query` (runs of letters and digits, as the stores'
/// default tokenizers split text), and those between each pair of `"`: an
/// escaped quote (`\"`) is part of a term, and an unclosed phrase runs to
/// the end. Generous on purpose: a count at least the stores' own.
pub fn count_terms(query: &str) -> Terms {
    let (mut all, mut phrase, mut longest_phrase, mut in_phrases) = (0, 0, 0, 0);
    let (mut in_word, mut in_phrase, mut escaped) = (false, false, false);
    for c in query.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            if in_phrase {
                longest_phrase = longest_phrase.max(phrase);
            }
            in_phrase = !in_phrase;
            phrase = 0;
            in_word = false;
            continue;
        }
        let word = c.is_alphanumeric();
        if word && !in_word {
            all += 1;
            if in_phrase {
                phrase += 1;
                in_phrases += 1;
            }
        }
        in_word = word;
    }
    Terms { all, longest_phrase: longest_phrase.max(phrase), in_phrases }
}

/// The deepest nesting of parentheses, counted on every `(` and `)` whether
/// or not a parser would take it as one (inside quotes, never closed): a
/// parser that backtracks may try each as a group. An escaped character
/// (`\(`, `\)`, `\\`) is part of a term, as the parsers read it: a `\)` in a
/// field name does not close anything (counting it did let a query 18 levels
/// deep pass as 1). Brackets and braces are not counted: range and set
/// parsing does not recurse.
pub fn nesting_depth(query: &str) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    let mut escaped = false;
    for byte in query.bytes() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' => escaped = true,
            b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, limit: usize, offset: usize) -> SearchRequest {
        SearchRequest { query: query.to_string(), limit, offset, timeout: Duration::from_secs(1) }
    }

    #[test]
    fn depth_counts_every_parenthesis_but_escaped_ones() {
        let cases = [
            ("", 0),
            ("customer.country:fi AND total_eur:[500 TO *]", 0),
            ("(a OR b) AND (c OR d)", 1),
            ("((a))", 2),
            ("a:(b:(c:(x)))", 3),
            ("((((((((((x", 10),
            ("x))))))((", 2),
            ("\"((((\"", 4),
            ("((\")\" ((\")\" x", 3),
            (r"\(\(\(", 0),
            (r"\\(\\(", 2),
            (&r"\):(".repeat(18), 18),
            ("([{x}])", 1),
            ("(a) (b) (c)", 1),
        ];
        for (query, expected) in cases {
            assert_eq!(nesting_depth(query), expected, "{query}");
        }
    }

    #[test]
    fn requests_are_checked_against_each_limit_in_turn() {
        let nested = |levels: usize| format!("{}x{}", "(".repeat(levels), ")".repeat(levels));
        let cases: Vec<(SearchRequest, Result<(), QueryRefused>)> = vec![
            (request("", 10, 0), Ok(())),
            (request(&nested(MAX_QUERY_DEPTH), MAX_LIMIT, 0), Ok(())),
            (request(&r"\):(".repeat(18), 10, 0), Err(QueryRefused::TooDeep { actual: 18 })),
            (request(&nested(MAX_QUERY_DEPTH + 1), 10, 0), Err(QueryRefused::TooDeep { actual: MAX_QUERY_DEPTH + 1 })),
            (request(&nested(30), 10, 0), Err(QueryRefused::TooDeep { actual: 30 })),
            (request(&"a".repeat(MAX_QUERY_BYTES), 10, 0), Ok(())),
            (request(&format!("(({}))", "a".repeat(4092)), 10, 0), Ok(())),
            (request(&format!("((({})))", "a".repeat(2042)), 10, 0), Ok(())),
            (
                request(&format!("((({})))", "a ".repeat(1022)), 10, 0),
                Err(QueryRefused::TooLongForDepth { bytes: 2050, depth: 3, allowed: 2048 }),
            ),
            (
                request(&format!("(((((((({}))))))))", "a ".repeat(40)), 10, 0),
                Err(QueryRefused::TooLongForDepth { bytes: 96, depth: 8, allowed: 64 }),
            ),
            (request(&format!("{}x", "NOT ".repeat(MAX_QUERY_NOTS)), 10, 0), Ok(())),
            (request(&format!("{}x", "NOT ".repeat(MAX_QUERY_NOTS + 1)), 10, 0), Err(QueryRefused::TooManyNots { actual: 65 })),
            (request(&"a".repeat(MAX_QUERY_BYTES + 1), 10, 0), Err(QueryRefused::TooLong { actual: MAX_QUERY_BYTES + 1 })),
            // Length is checked before depth: a long text is never scanned for depth.
            (request(&"(".repeat(MAX_QUERY_BYTES + 1), 10, 0), Err(QueryRefused::TooLong { actual: MAX_QUERY_BYTES + 1 })),
            (request("a", MAX_LIMIT + 1, 0), Err(QueryRefused::LimitTooHigh { actual: MAX_LIMIT + 1 })),
            (request("a", 100_000_000_000, 0), Err(QueryRefused::LimitTooHigh { actual: 100_000_000_000 })),
            (request("a", 0, MAX_WINDOW), Ok(())),
            (request("a", 10, MAX_WINDOW - 10), Ok(())),
            (request("a", 10, MAX_WINDOW - 9), Err(QueryRefused::WindowTooDeep { offset: MAX_WINDOW - 9, limit: 10 })),
            (request("a", 10, usize::MAX), Err(QueryRefused::WindowTooDeep { offset: usize::MAX, limit: 10 })),
        ];
        for (request, expected) in cases {
            assert_eq!(check(&request), expected, "{:.40} limit {} offset {}", request.query, request.limit, request.offset);
        }
    }

    #[test]
    fn terms_are_the_words_and_a_phrase_the_words_between_its_quotes() {
        let cases = [
            // (query, words, longest phrase, words in phrases)
            ("", 0, 0, 0),
            ("customer.country:fi AND total_eur:[500 TO *]", 8, 0, 0),
            ("title:\"the big lebowski\" year:1998", 6, 3, 3),
            ("\"a b\" \"c d e\"", 5, 3, 5),
            // An unclosed phrase runs to the end.
            ("x \"a b c d", 5, 4, 4),
            // An escaped quote opens no phrase.
            (r#"a\"b c d\"e"#, 5, 0, 0),
            ("order_id:o-123", 4, 0, 0),
            ("été 東京", 2, 0, 0),
        ];
        for (query, all, longest_phrase, in_phrases) in cases {
            assert_eq!(count_terms(query), Terms { all, longest_phrase, in_phrases }, "{query}");
        }
    }

    #[test]
    fn control_characters_terms_and_phrases_are_capped() {
        let phrase = |words: usize| format!("order_id:\"{}\"", vec!["o"; words].join(" "));
        let cases: Vec<(String, Result<(), QueryRefused>)> = vec![
            ("curr\u{0}ency:eur".into(), Err(QueryRefused::ControlCharacter { code: 0, at: 4 })),
            ("\u{0}:eur".into(), Err(QueryRefused::ControlCharacter { code: 0, at: 0 })),
            ("a:\u{1}b".into(), Err(QueryRefused::ControlCharacter { code: 1, at: 2 })),
            ("a:b\u{7f}".into(), Err(QueryRefused::ControlCharacter { code: 0x7f, at: 3 })),
            ("a:b\u{9f}".into(), Err(QueryRefused::ControlCharacter { code: 0x9f, at: 3 })),
            // Whitespace is no control character here (made a space first).
            ("a\tb".into(), Ok(())),
            (phrase(MAX_PHRASE_TERMS), Ok(())),
            (phrase(MAX_PHRASE_TERMS + 1), Err(QueryRefused::PhraseTooLong { actual: MAX_PHRASE_TERMS + 1 })),
            (phrase(2030), Err(QueryRefused::TooManyTerms { actual: 2032 })),
            (vec![phrase(32); 8].join(" "), Ok(())),
            (format!("{} {}", vec![phrase(32); 8].join(" "), phrase(1)), Err(QueryRefused::TooManyPhraseTerms { actual: 257 })),
            (vec!["a"; MAX_QUERY_TERMS].join(" "), Ok(())),
            (vec!["a"; MAX_QUERY_TERMS + 1].join(" "), Err(QueryRefused::TooManyTerms { actual: MAX_QUERY_TERMS + 1 })),
        ];
        for (query, expected) in cases {
            assert_eq!(check(&request(&query, 10, 0)), expected, "{query:.60}");
        }
        let message = check(&request("a\u{0}b", 10, 0)).unwrap_err().to_string();
        assert!(message.contains("U+0000") && message.contains("control character"), "{message}");
        let message = check(&request(&phrase(40), 10, 0)).unwrap_err().to_string();
        assert!(message.contains("phrase term limit") && message.contains("32"), "{message}");
    }

    #[test]
    fn whitespace_is_made_plain_spaces_before_the_checks() {
        let checked = request("a\tb\nc\r\u{3000}d", 10, 0).checked().unwrap();
        assert_eq!(checked.query, "a b c  d");
        assert_eq!(request("x", 10, 0).checked().unwrap().query, "x");
        assert!(matches!(request(&"(".repeat(9), 10, 0).checked(), Err(QueryRefused::TooDeep { actual: 9 })));
        assert!(matches!(request(&"a".repeat(5000), 10, 0).checked(), Err(QueryRefused::TooLong { actual: 5000 })));
    }

    #[test]
    fn refusals_name_the_limit() {
        let message = check(&request(&"(".repeat(9), 10, 0)).unwrap_err().to_string();
        assert!(message.contains("query depth limit") && message.contains('8'), "{message}");
        let message = check(&request("a", 5000, 0)).unwrap_err().to_string();
        assert!(message.contains("limit cap") && message.contains("1000"), "{message}");
    }
}
