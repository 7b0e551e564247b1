//! The core's typed failures, with their wire answers.
//!
//! An op that fails is an [`OpFailure`]: the code and reason of the app protocol's `error`
//! event (or, on HTTP, of its JSON answer with the code's status). A connection refused is a
//! `connection::shared::CloseRequest` (its close code and reason). Code that refuses names the
//! code at the call site (`OpFailure::new(ErrorCode::Forbidden, …)`) and passes the value up;
//! only the edge turns it into bytes.

use std::borrow::Cow;

use proto_codec::protocol::{ErrorCode, ServerEvent};

/// An op refused or failed: the `error` event's code and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct OpFailure {
    /// The code.
    pub code: ErrorCode,
    /// Details for humans.
    pub reason: String,
}

impl OpFailure {
    /// A failure with this code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> OpFailure {
        OpFailure {
            code,
            reason: reason.into(),
        }
    }

    /// The `error` event that answers the op `id`.
    pub fn event(&self, id: Option<u64>) -> ServerEvent<'_> {
        ServerEvent::Error {
            id,
            code: self.code,
            reason: Cow::Borrowed(&self.reason),
        }
    }

    /// The HTTP status of its answer on the HTTP endpoints.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_its_error_event_and_status() {
        let f = OpFailure::new(ErrorCode::Forbidden, "not yours");
        assert_eq!(f.to_string(), "forbidden: not yours");
        assert_eq!(f.http_status(), ErrorCode::Forbidden.http_status());
        let json: serde_json::Value = serde_json::from_str(&f.event(Some(3)).to_json()).unwrap();
        assert_eq!(
            (
                json["ev"].as_str(),
                json["id"].as_u64(),
                json["code"].as_str()
            ),
            (Some("error"), Some(3), Some("forbidden"))
        );
        assert_eq!(json["reason"], "not yours");
    }
}
