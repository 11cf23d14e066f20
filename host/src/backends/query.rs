//! What one search may ask of a store, checked before any backend parses the
//! query, so that both backends refuse the same requests for the same reason.
//!
//! tantivy's query grammar backtracks exponentially in the nesting depth: 25
//! nested parentheses around one word kept a core busy for minutes. Length
//! and depth are therefore counted on the raw text, before any parser runs,
//! and the result window is capped; the time a search may take is bounded by
//! each backend (a deadline checked while collecting, Elasticsearch's
//! `timeout`).

use std::time::Duration;

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_QUERY_DEPTH: usize = 8;
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
        "the query nests brackets {actual} levels deep; at most {MAX_QUERY_DEPTH} are accepted (query depth limit): write the \
         condition with fewer parentheses"
    )]
    TooDeep { actual: usize },
    #[error("limit {actual} is above the cap of {MAX_LIMIT} documents per request (limit cap): page through with offset")]
    LimitTooHigh { actual: usize },
    #[error(
        "offset {offset} with limit {limit} reaches past document {MAX_WINDOW} (result window cap): narrow the query instead of \
         paging that deep"
    )]
    WindowTooDeep { offset: usize, limit: usize },
}

/// Checks a search against the limits above; the first one broken is the error.
pub fn check(request: &SearchRequest) -> Result<(), QueryRefused> {
    let query = &request.query;
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryRefused::TooLong { actual: query.len() });
    }
    let depth = nesting_depth(query);
    if depth > MAX_QUERY_DEPTH {
        return Err(QueryRefused::TooDeep { actual: depth });
    }
    if request.limit > MAX_LIMIT {
        return Err(QueryRefused::LimitTooHigh { actual: request.limit });
    }
    if request.offset.saturating_add(request.limit) > MAX_WINDOW {
        return Err(QueryRefused::WindowTooDeep { offset: request.offset, limit: request.limit });
    }
    Ok(())
}

/// The deepest nesting of opening brackets, counted on every `(`, `[` and
/// `{` whether or not a parser would take it as one (inside quotes, escaped,
/// never closed): a parser that backtracks may try each of them as a group.
/// A closing bracket ends the innermost open one of any kind.
pub fn nesting_depth(query: &str) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    for byte in query.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
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
    fn depth_counts_every_opening_bracket() {
        let cases = [
            ("", 0),
            ("customer.country:fi AND total_eur:[500 TO *]", 1),
            ("(a OR b) AND (c OR d)", 1),
            ("((a))", 2),
            ("a:(b:(c:(x)))", 3),
            ("((((((((((x", 10),
            ("x))))))((", 2),
            ("\"((((\"", 4),
            (r"\(\(\(", 3),
            ("([{x}])", 3),
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
            (request(&nested(MAX_QUERY_DEPTH + 1), 10, 0), Err(QueryRefused::TooDeep { actual: MAX_QUERY_DEPTH + 1 })),
            (request(&nested(30), 10, 0), Err(QueryRefused::TooDeep { actual: 30 })),
            (request(&"a".repeat(MAX_QUERY_BYTES), 10, 0), Ok(())),
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
    fn refusals_name_the_limit() {
        let message = check(&request(&"(".repeat(9), 10, 0)).unwrap_err().to_string();
        assert!(message.contains("query depth limit") && message.contains('8'), "{message}");
        let message = check(&request("a", 5000, 0)).unwrap_err().to_string();
        assert!(message.contains("limit cap") && message.contains("1000"), "{message}");
    }
}
