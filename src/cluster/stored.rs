//! A feed's state in Redis as this replica reads it: the body, validators,
//! sequence and Stream entries the leader wrote, and what it told besides
//! (status, end). One consistent read by the `read` script.
//!
//! This module owns the shape of that state on this side and its decoding;
//! it never writes to Redis and never touches a local feed.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use redis::Value;

use super::keys::Keys;
use super::{Cluster, ClusterError};
use crate::upstream::Validators;

/// The feed's state in Redis, as one read returned it.
pub(super) struct Stored {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub rev: u64,
    /// `None`: unchanged since the rev asked about.
    pub full: Option<Full>,
}

pub(super) struct Full {
    pub body: Bytes,
    pub validators: Validators,
    pub events: Vec<(u64, Bytes)>,
    pub status: Told,
}

/// What the leader told its subscribers besides events: the upstream's
/// status and an object feed's end, as encoded bytes every replica serves.
#[derive(Debug, Default)]
pub(super) struct Told {
    /// `Some` while the upstream fails: the `stale` body.
    pub stale: Option<Bytes>,
    /// The `recovered` body of the last recovery.
    pub recovered: Bytes,
    /// The terminal event, once the feed reached its end.
    pub end: Option<Bytes>,
}

/// What this replica last applied: `(epoch, rev)`.
pub(super) type Seen = Option<(Arc<str>, u64)>;

/// One consistent read of the state and the entries from `from`.
pub(super) async fn read(
    cluster: &Cluster,
    keys: &Keys,
    seen: &Seen,
    from: u64,
) -> Result<Option<Stored>, ClusterError> {
    let (epoch, rev) = match seen {
        Some((e, r)) => (e.to_string(), r.to_string()),
        None => (String::new(), String::new()),
    };
    let mut script = cluster.scripts.read.key(&keys.state);
    script.key(&keys.stream).arg(epoch).arg(rev).arg(from);
    let reply: Vec<Value> = cluster.invoke(&script).await?;
    if reply.is_empty() {
        return Ok(None);
    }
    let bytes = |i: usize| -> Result<Bytes, ClusterError> {
        match reply.get(i) {
            Some(Value::BulkString(b)) => Ok(Bytes::copy_from_slice(b)),
            Some(Value::Int(n)) => Ok(Bytes::from(n.to_string())),
            other => Err(ClusterError::Reply(format!("field {i}: {other:?}"))),
        }
    };
    let number = |i: usize| -> Result<u64, ClusterError> {
        let b = bytes(i)?;
        std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClusterError::Reply(format!("field {i} is not a number")))
    };
    let epoch: Arc<str> = String::from_utf8_lossy(&bytes(0)?).into();
    let seq = number(1)?;
    let rev = number(2)?;
    if reply.len() == 3 {
        return Ok(Some(Stored {
            epoch,
            seq,
            rev,
            full: None,
        }));
    }
    let header = |b: Bytes| {
        (!b.is_empty())
            .then(|| HeaderValue::from_maybe_shared(b).ok())
            .flatten()
    };
    let validators = Validators {
        etag: header(bytes(4)?),
        last_modified: header(bytes(5)?),
    };
    let given = |b: Bytes| (!b.is_empty()).then_some(b);
    let status = Told {
        stale: (number(6)? == 1).then_some(bytes(7)?),
        recovered: bytes(8)?,
        end: given(bytes(9)?),
    };
    let mut events = Vec::new();
    let mut i = 10;
    while i + 1 < reply.len() {
        events.push((number(i)?, bytes(i + 1)?));
        i += 2;
    }
    Ok(Some(Stored {
        epoch,
        seq,
        rev,
        full: Some(Full {
            body: bytes(3)?,
            validators,
            events,
            status,
        }),
    }))
}
