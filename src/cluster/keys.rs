//! Redis key and channel names. A feed's identity (definition, path
//! parameters, query, and the credentials of a per-user feed) reaches Redis
//! only as an HMAC-SHA256 under `POLLCAST_CLUSTER_SECRET`: no token, cookie
//! or query value is ever part of a key, a channel or a message.

use ring::hmac;

use crate::feed::Feed;

/// The names of one feed's keys.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The keyed hash of the feed identity (hex), also the pub/sub message.
    pub hash: String,
    pub lease: String,
    pub fence: String,
    pub state: String,
    pub stream: String,
    /// A per-user feed (`auth = "forward"`): its keys get `user_ttl`.
    pub per_user: bool,
}

/// Hashes feed identities with the cluster's key.
pub(crate) struct Namer {
    key: hmac::Key,
    prefix: String,
}

impl Namer {
    pub fn new(prefix: &str, secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            prefix: prefix.to_owned(),
        }
    }

    /// The channel leaders announce new writes on (message: a feed hash).
    pub fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The channel refresh requests travel on.
    pub fn refresh_channel(&self) -> String {
        format!("{}refresh", self.prefix)
    }

    pub fn keys(&self, feed: &Feed) -> Keys {
        let mut ctx = hmac::Context::with_key(&self.key);
        let k = &feed.key;
        // Length-prefixed parts: no two identities hash the same input.
        let mut part = |b: &[u8]| {
            ctx.update(&(b.len() as u64).to_be_bytes());
            ctx.update(b);
        };
        part(b"pollcast-feed-v1");
        part(feed.def.name.as_bytes());
        part(feed.poll_path.as_bytes());
        part(k.query.as_bytes());
        for p in &k.params {
            part(p.as_bytes());
        }
        part(k.authorization.as_ref().map_or(&[][..], |v| v.as_bytes()));
        part(k.cookie.as_ref().map_or(&[][..], |v| v.as_bytes()));
        let tag = ctx.sign();
        let hash: String = tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // One hash tag per feed: its keys live in one Redis Cluster slot.
        let base = format!("{}{{{hash}}}", self.prefix);
        Keys {
            lease: format!("{base}:lease"),
            fence: format!("{base}:fence"),
            state: format!("{base}:state"),
            stream: format!("{base}:events"),
            per_user: feed.def.auth == crate::config::AuthMode::Forward,
            hash,
        }
    }
}
