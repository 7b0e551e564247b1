//! Room patterns in permissions: `prices.*`, `chat.{user}`, `chat.lobby`.
//!
//! A pattern is matched against the whole room name. `*` matches any run of room characters
//! (including none, and including `.`); `{user}` is replaced by the token's `sub` **literally**
//! when the pattern is compiled for a connection, so a `sub` holding `*` grants nothing extra.
//! Every other character must be a room character and matches itself.

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty pattern.
    #[error("empty room pattern")]
    Empty,
    /// A character that is neither a room character, `*`, nor part of `{user}`.
    #[error("room pattern `{0}` has a character outside [A-Za-z0-9._-:@/=+*] or a placeholder other than {{user}}")]
    BadCharacter(String),
    /// `{user}` in a pattern of a connection without a user.
    #[error("room pattern `{0}` uses {{user}} but the connection has no user")]
    NoUser(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Star,
}

/// A compiled room pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern {
    parts: Vec<Part>,
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-:@/=+".contains(&b)
}

impl RoomPattern {
    /// Compiles a pattern for a connection whose user is `user`.
    pub fn compile(pattern: &str, user: Option<&str>) -> Result<RoomPattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{user}") {
                let Some(user) = user else {
                    return Err(PatternError::NoUser(pattern.to_string()));
                };
                literal.push_str(user);
                rest = after;
            } else if c == '*' {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into()));
                }
                if parts.last() != Some(&Part::Star) {
                    parts.push(Part::Star);
                }
                rest = &rest[1..];
            } else if c.is_ascii() && is_room_byte(c as u8) {
                literal.push(c);
                rest = &rest[1..];
            } else {
                return Err(PatternError::BadCharacter(pattern.to_string()));
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into()));
        }
        Ok(RoomPattern { parts })
    }

    /// Checks a pattern's syntax (with a placeholder user).
    pub fn check(pattern: &str) -> Result<(), PatternError> {
        RoomPattern::compile(pattern, Some("u")).map(|_| ())
    }

    /// Whether the pattern matches the whole room name.
    pub fn matches(&self, room: &str) -> bool {
        match_parts(&self.parts, room)
    }
}

/// Glob matching with `*` only. Parts alternate between literals and stars, so: a leading
/// literal is a prefix, a trailing literal a suffix, and each middle literal is found leftmost
/// (taking the leftmost occurrence never loses a match when the only wildcard is `*`).
fn match_parts(parts: &[Part], room: &str) -> bool {
    let n = parts.len();
    let mut rest = room;
    for (i, part) in parts.iter().enumerate() {
        match part {
            Part::Star if i + 1 == n => return true,
            Part::Star => {}
            Part::Literal(lit) if i == 0 => {
                let Some(after) = rest.strip_prefix(&**lit) else {
                    return false;
                };
                if n == 1 {
                    return after.is_empty();
                }
                rest = after;
            }
            Part::Literal(lit) if i + 1 == n => return rest.ends_with(&**lit),
            Part::Literal(lit) => match rest.find(&**lit) {
                Some(at) => rest = &rest[at + lit.len()..],
                None => return false,
            },
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, room: &str) -> bool {
        RoomPattern::compile(p, Some("alice"))
            .unwrap()
            .matches(room)
    }

    #[test]
    fn literals_stars_and_user() {
        assert!(m("chat.lobby", "chat.lobby"));
        assert!(!m("chat.lobby", "chat.lobby2"));
        assert!(!m("chat.lobby", "chat.lobb"));
        assert!(m("prices.*", "prices.BTC-USD"));
        assert!(m("prices.*", "prices."));
        assert!(m("prices.*", "prices.a.b"));
        assert!(!m("prices.*", "pricesX"));
        assert!(!m("prices.*", "news.prices.x"));
        assert!(m("*", "anything"));
        assert!(m("*.eu", "prices.eu"));
        assert!(!m("*.eu", "prices.eu.x"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "abbbcbc"));
        assert!(!m("a*b*c", "abcd"));
        assert!(m("chat.{user}", "chat.alice"));
        assert!(!m("chat.{user}", "chat.bob"));
        assert!(m("chat.{user}.*", "chat.alice.inbox"));
        assert!(m("dm.*.{user}", "dm.bob.alice"));
    }

    #[test]
    fn user_is_literal_and_bad_patterns_are_refused() {
        // A `sub` of `*` must not turn into a wildcard.
        let p = RoomPattern::compile("chat.{user}", Some("*")).unwrap();
        assert!(!p.matches("chat.bob"));
        assert!(p.matches("chat.*"));
        assert_eq!(RoomPattern::check(""), Err(PatternError::Empty));
        assert!(RoomPattern::check("chat room").is_err());
        assert!(RoomPattern::check("chat.{other}").is_err());
        assert!(RoomPattern::compile("chat.{user}", None).is_err());
    }
}
