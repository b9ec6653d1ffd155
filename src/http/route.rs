//! Route patterns (`/ws/:id`, `/files/*`) and an ordered route table.
//!
//! Matching only: not I/O, no percent-decoding, no HTTP method handling.

use std::fmt;

/// A route pattern: literal segments, `:name` parameters (exactly one non-empty segment each), and an optional trailing `*` wildcard matching the rest (possibly empty), read as param "*".
#[derive(Debug, Clone)]
pub struct RoutePattern {
    // Read by the Debug output, and by `as_str` in the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    raw: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
    Wildcard,
}

/// A pattern string that cannot be a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl RoutePattern {
    /// Must start with '/'; '*' only as the whole last segment; ':' params need a name; duplicate param names are an error.
    ///
    /// One trailing `/` is ignored (`/ws/` is `/ws`); other empty segments
    /// (`/a//b`) are an error, since no path segment could match them.
    pub fn parse(pattern: &str) -> Result<RoutePattern, PatternError> {
        let fail = |why: &str| Err(PatternError(format!("route pattern {pattern:?}: {why}")));
        let Some(body) = pattern.strip_prefix('/') else {
            return fail("must start with '/'");
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.into_iter().enumerate() {
                let segment = if part == "*" {
                    if i != last {
                        return fail("'*' must be the last segment");
                    }
                    Segment::Wildcard
                } else if part.contains('*') {
                    return fail("'*' must be a whole segment");
                } else if part.is_empty() {
                    return fail("empty segment");
                } else if let Some(name) = part.strip_prefix(':') {
                    if name.is_empty() {
                        return fail("parameter without a name");
                    }
                    let dup = segments
                        .iter()
                        .any(|s| matches!(s, Segment::Param(n) if **n == *name));
                    if dup {
                        return fail("duplicate parameter name");
                    }
                    Segment::Param(name.into())
                } else {
                    Segment::Literal(part.into())
                };
                segments.push(segment);
            }
        }
        Ok(RoutePattern {
            raw: pattern.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as given to [`RoutePattern::parse`].
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Matches a request path (no query). A trailing slash on the path is ignored ("/ws/" matches "/ws"), as Fiber's non-strict routing does. Returns the parameters in pattern order.
    ///
    /// Literals compare case-sensitively (RFC 3986 §6.2.2.1: paths are
    /// case-sensitive); captured values are not percent-decoded.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let body = path.strip_prefix('/')?;
        let body = body.strip_suffix('/').unwrap_or(body);
        // `None` once every path segment has been taken; "" (root) has none.
        let mut rest = (!body.is_empty()).then_some(body);
        let mut params: Vec<(Box<str>, Box<str>)> = Vec::new();
        for segment in self.segments.iter() {
            if let Segment::Wildcard = segment {
                params.push(("*".into(), rest.unwrap_or("").into()));
                return Some(Params(params.into()));
            }
            let current = rest?;
            let (head, tail) = match current.split_once('/') {
                Some((h, t)) => (h, Some(t)),
                None => (current, None),
            };
            rest = tail;
            match segment {
                Segment::Literal(lit) if **lit == *head => {}
                Segment::Param(name) if !head.is_empty() => {
                    params.push((name.clone(), head.into()));
                }
                _ => return None,
            }
        }
        match rest {
            Some(_) => None,
            None => Some(Params(params.into())),
        }
    }
}

/// Captured route parameters (few, so a boxed slice searched linearly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Box<[(Box<str>, Box<str>)]>);

impl Params {
    /// The value captured for `name` (`"*"` for the wildcard).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| **n == *name).map(|(_, v)| &**v)
    }

    /// All parameters as (name, value), in pattern order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    /// Whether nothing was captured.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many parameters were captured.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// An ordered table of routes; the first registered pattern that matches wins.
#[derive(Debug, Clone)]
pub struct Router<T> {
    routes: Vec<(RoutePattern, T)>,
}

impl<T> Router<T> {
    /// An empty table.
    pub fn new() -> Self {
        Router { routes: Vec::new() }
    }

    /// Appends a route; it loses to every route added before it.
    pub fn add(&mut self, pattern: RoutePattern, value: T) {
        self.routes.push((pattern, value));
    }

    /// The value of the first route matching `path`, with its parameters.
    pub fn find(&self, path: &str) -> Option<(&T, Params)> {
        self.routes
            .iter()
            .find_map(|(p, v)| p.matches(path).map(|params| (v, params)))
    }

    /// Number of routes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route was added.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in registration order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&RoutePattern, &T)> + '_ {
        self.routes.iter().map(|(p, v)| (p, v))
    }
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    fn params(p: &str, path: &str) -> Option<Vec<(String, String)>> {
        pat(p).matches(path).map(|ps| {
            ps.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
    }

    fn kv(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|&(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn param_takes_exactly_one_segment() {
        assert_eq!(params("/ws/:id", "/ws/42"), kv(&[("id", "42")]));
        assert_eq!(params("/ws/:id", "/ws/42/"), kv(&[("id", "42")]));
        assert_eq!(params("/ws/:id", "/ws"), None);
        assert_eq!(params("/ws/:id", "/ws/"), None);
        assert_eq!(params("/ws/:id", "/ws/a/b"), None);
        assert_eq!(params("/room/:name", "/room/a/b"), None);
        assert_eq!(params("/ws/:id", "ws/42"), None);
        assert_eq!(params("/ws/:id", ""), None);
    }

    #[test]
    fn empty_segments_never_match_a_param() {
        assert_eq!(params("/ws/:id", "/ws//"), None);
        assert_eq!(params("/a/:x/b", "/a//b"), None);
        assert_eq!(params("/:x", "//"), None);
        assert_eq!(params("/ws", "/ws//"), None);
    }

    #[test]
    fn wildcard_takes_the_rest() {
        assert_eq!(params("/files/*", "/files/a/b/c"), kv(&[("*", "a/b/c")]));
        assert_eq!(params("/files/*", "/files/"), kv(&[("*", "")]));
        assert_eq!(params("/files/*", "/files"), kv(&[("*", "")]));
        assert_eq!(params("/files/*", "/filesx"), None);
        assert_eq!(params("/*", "/"), kv(&[("*", "")]));
        assert_eq!(params("/*", "/x/y"), kv(&[("*", "x/y")]));
        assert_eq!(
            params("/u/:id/*", "/u/7/a/b"),
            kv(&[("id", "7"), ("*", "a/b")])
        );
        assert_eq!(
            pat("/files/*").matches("/files/a").unwrap().get("*"),
            Some("a")
        );
    }

    #[test]
    fn root_and_literals() {
        assert_eq!(params("/", "/"), kv(&[]));
        assert_eq!(params("/", "/x"), None);
        assert_eq!(params("/ws", "/ws"), kv(&[]));
        assert_eq!(params("/ws", "/ws/"), kv(&[]));
        assert_eq!(params("/ws/", "/ws"), kv(&[]));
        assert_eq!(params("/ws", "/WS"), None);
        assert_eq!(params("/ws", "/wss"), None);
        assert_eq!(params("/ws", "/"), None);
        assert_eq!(params("/ws/chat", "/ws/chat"), kv(&[]));
        assert_eq!(params("/ws/chat", "/ws/Chat"), None);
    }

    #[test]
    fn two_params_in_order() {
        let p = pat("/a/:x/b/:y").matches("/a/1/b/2").unwrap();
        assert_eq!(p.get("x"), Some("1"));
        assert_eq!(p.get("y"), Some("2"));
        assert_eq!(p.get("z"), None);
        assert_eq!(p.len(), 2);
        assert_eq!(p.iter().collect::<Vec<_>>(), [("x", "1"), ("y", "2")]);
        assert_eq!(pat("/a/:x/b/:y").matches("/a/1/c/2"), None);
        assert!(pat("/a").matches("/a").unwrap().is_empty());
    }

    #[test]
    fn parse_errors() {
        let err = |s: &str| RoutePattern::parse(s).unwrap_err().0;
        assert_eq!(err("ws"), "route pattern \"ws\": must start with '/'");
        assert_eq!(err(""), "route pattern \"\": must start with '/'");
        assert_eq!(
            err("/*/x"),
            "route pattern \"/*/x\": '*' must be the last segment"
        );
        assert_eq!(
            err("/a*"),
            "route pattern \"/a*\": '*' must be a whole segment"
        );
        assert_eq!(err("/:"), "route pattern \"/:\": parameter without a name");
        assert_eq!(
            err("/:a/:a"),
            "route pattern \"/:a/:a\": duplicate parameter name"
        );
        assert_eq!(err("/a//b"), "route pattern \"/a//b\": empty segment");
        assert_eq!(
            RoutePattern::parse("ws").unwrap_err().to_string(),
            "route pattern \"ws\": must start with '/'"
        );
        assert_eq!(pat("/ws/:id").as_str(), "/ws/:id");
    }

    #[test]
    fn router_first_match_wins() {
        let mut r = Router::new();
        assert!(r.is_empty());
        r.add(pat("/ws/admin"), 1);
        r.add(pat("/ws/:id"), 2);
        r.add(pat("/ws/*"), 3);
        assert_eq!(r.len(), 3);
        let (v, p) = r.find("/ws/admin").unwrap();
        assert_eq!((*v, p.is_empty()), (1, true));
        let (v, p) = r.find("/ws/42").unwrap();
        assert_eq!((*v, p.get("id")), (2, Some("42")));
        let (v, p) = r.find("/ws/a/b").unwrap();
        assert_eq!((*v, p.get("*")), (3, Some("a/b")));
        assert!(r.find("/other").is_none());
        let order: Vec<_> = r.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        assert_eq!(order, [("/ws/admin", 1), ("/ws/:id", 2), ("/ws/*", 3)]);
        assert!(Router::<u8>::default().find("/").is_none());
    }
}
