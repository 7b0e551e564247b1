//! The node list: this node's entry in the deployment's node hash ([`wire::nodes_key`]), written
//! with the presence TTL at every presence refresh, and the list read back right after, for the
//! admin page. The entries use the presence scripts (an expiry Redis' clock sets in each value,
//! expired entries removed when read), so no second expiry scheme exists; the hash is one key
//! under one hash tag, so it works the same on Redis Cluster.

use std::sync::Arc;
use std::time::Instant;

use redis::{RedisResult, Value};

use crate::redis::scripts;
use crate::redis::wire;
use crate::redis::{BridgeHealth, ClusterNodes};

use super::Bridge;

impl Bridge {
    /// Writes this node's entry and reads the list (when the node announces itself and the link
    /// is up). A failure leaves the last list in place; its `read_at` shows its age.
    pub(super) fn announce(&mut self) {
        let (Some(link), Some(me)) = (&self.link, &self.settings.announce) else {
            return;
        };
        let key = wire::nodes_key(&self.settings.prefix);
        let ttl = self.settings.presence_ttl.as_millis() as u64;
        let (name, info) = (me.name.clone(), me.info.clone());
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let health: Arc<BridgeHealth> = self.health.clone();
        tokio::spawn(async move {
            let set: RedisResult<Value> = scripts
                .presence_set
                .key(&key)
                .arg(ttl)
                .arg(&name)
                .arg(&info)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "announcing the node failed");
                return;
            }
            let list: RedisResult<Value> =
                scripts.presence_get.key(&key).invoke_async(&mut conn).await;
            match list
                .map_err(|e| e.to_string())
                .and_then(|v| scripts::parse_members(v).map_err(|e| e.to_string()))
            {
                Ok(nodes) => health.set_cluster_nodes(ClusterNodes {
                    read_at: Instant::now(),
                    nodes,
                }),
                Err(reason) => tracing::debug!(%reason, "reading the node list failed"),
            }
        });
    }
}
