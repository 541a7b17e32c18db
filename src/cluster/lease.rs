//! A feed's lease in Redis: acquire (SET NX PX with a fencing token),
//! renew at a third of the lease, release on the way out.
//!
//! This module owns the lease's three scripts' calls; it never decides when
//! to lead (that is `follow`'s) and never writes a feed's state.

use super::keys::Keys;
use super::{Cluster, ClusterError};

/// A lease this replica holds. `fresh`: the replica comes back from polling
/// on its own, so what Redis holds may predate its own polls; it starts a
/// new epoch from a poll of its own instead of resuming the stored state.
pub(super) struct Lease {
    pub token: String,
    pub fresh: bool,
}

pub(super) async fn acquire(
    cluster: &Cluster,
    keys: &Keys,
) -> Result<Option<String>, ClusterError> {
    let mut conn = cluster.conn()?;
    cluster
        .timed(
            cluster
                .scripts
                .acquire
                .key(&keys.lease)
                .key(&keys.fence)
                .arg(&cluster.replica)
                .arg(cluster.cfg.lease.as_millis() as u64)
                .arg(cluster.ttl_ms(keys))
                .invoke_async(&mut conn),
        )
        .await
}

pub(super) async fn renew(cluster: &Cluster, keys: &Keys, token: &str) -> bool {
    let Ok(mut conn) = cluster.conn() else {
        return false;
    };
    let r: Result<i64, _> = cluster
        .timed(
            cluster
                .scripts
                .renew
                .key(&keys.lease)
                .arg(token)
                .arg(cluster.cfg.lease.as_millis() as u64)
                .invoke_async(&mut conn),
        )
        .await;
    if r.is_err() {
        cluster.suspect();
    }
    matches!(r, Ok(1))
}

pub(super) async fn release(cluster: &Cluster, keys: &Keys, token: &str) {
    let Ok(mut conn) = cluster.conn() else {
        return;
    };
    let r: Result<i64, _> = cluster
        .timed(
            cluster
                .scripts
                .release
                .key(&keys.lease)
                .arg(token)
                .invoke_async(&mut conn),
        )
        .await;
    if let Err(e) = r {
        tracing::debug!("cluster: release: {e}");
    }
}
