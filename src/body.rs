//! Response bodies: the one body type every response pollcast produces.
//!
//! A leaf: it imports nothing of the crate. Everything above builds its
//! bodies with these helpers rather than boxing its own.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response pollcast produces.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body of exactly these bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
