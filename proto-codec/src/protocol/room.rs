//! Room names: what is allowed, and the namespace a room belongs to.
//!
//! A room name is 1–200 bytes of ASCII letters, digits and `. _ - : @ / = +`. The namespace is the
//! part before the first `.` (`prices.BTC-USD` is in `prices`); a name without `.` is in the
//! default namespace `""`.

/// The longest room name.
pub const MAX_ROOM_BYTES: usize = 200;

/// Why a room name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The name is empty.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_BYTES`].
    #[error("room name is over {MAX_ROOM_BYTES} bytes")]
    TooLong,
    /// The name has a character outside the allowed set.
    #[error("room name has a character outside [A-Za-z0-9._-:@/=+]")]
    BadCharacter,
}

/// Checks a room name.
pub fn validate_room(room: &str) -> Result<(), RoomError> {
    if room.is_empty() {
        return Err(RoomError::Empty);
    }
    if room.len() > MAX_ROOM_BYTES {
        return Err(RoomError::TooLong);
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:@/=+".contains(&b))
    {
        return Err(RoomError::BadCharacter);
    }
    Ok(())
}

/// The namespace of a (valid) room: the part before the first `.`, or `""`.
pub fn namespace_of(room: &str) -> &str {
    room.split_once('.').map_or("", |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_room("prices.BTC-USD"), Ok(()));
        assert_eq!(validate_room("chat.user:42@team/a=b+c_d"), Ok(()));
        assert_eq!(validate_room(""), Err(RoomError::Empty));
        assert_eq!(validate_room(&"a".repeat(201)), Err(RoomError::TooLong));
        for bad in ["a b", "a\"b", "a\\b", "a*", "é", "a\n"] {
            assert_eq!(validate_room(bad), Err(RoomError::BadCharacter), "{bad:?}");
        }
        assert_eq!(namespace_of("prices.BTC.x"), "prices");
        assert_eq!(namespace_of("lobby"), "");
    }
}
