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

/// A request body pollcast can forward: bytes, sendable, and an error it can
/// box (what hyper's and the direct listener's bodies are).
pub trait Incoming: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<B> Incoming for B
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
}
