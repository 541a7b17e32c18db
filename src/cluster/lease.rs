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
    let lease = cluster.cfg.lease.as_millis() as u64;
    let mut script = cluster.scripts.acquire.key(&keys.lease);
    script
        .key(&keys.fence)
        .arg(&cluster.replica)
        .arg(lease)
        .arg(cluster.ttl_ms(keys));
    cluster.invoke(&script).await
}

pub(super) async fn renew(cluster: &Cluster, keys: &Keys, token: &str) -> bool {
    let lease = cluster.cfg.lease.as_millis() as u64;
    let mut script = cluster.scripts.renew.key(&keys.lease);
    script.arg(token).arg(lease);
    match cluster.invoke::<i64>(&script).await {
        Ok(r) => r == 1,
        // Not connected: the health check already knows.
        Err(ClusterError::Down) => false,
        Err(_) => {
            cluster.suspect();
            false
        }
    }
}

pub(super) async fn release(cluster: &Cluster, keys: &Keys, token: &str) {
    let mut script = cluster.scripts.release.key(&keys.lease);
    script.arg(token);
    match cluster.invoke::<i64>(&script).await {
        Ok(_) | Err(ClusterError::Down) => {}
        Err(e) => tracing::debug!("cluster: release: {e}"),
    }
}
