//! Presence across nodes: this node's members in each room's hash (with an expiry every node
//! refreshes), and the members' query.

use bytes::Bytes;
use redis::{RedisResult, Value};

use crate::redis::scripts::{self};
use crate::{BrokerEvent, RoomName, Token};

use super::{failed, Bridge};

impl Bridge {
    pub(super) fn presence_set(&mut self, room: RoomName, client: String, member: Option<Bytes>) {
        let keys = self.keys(&room);
        match &member {
            Some(m) => {
                self.members
                    .entry(room)
                    .or_default()
                    .insert(client.clone(), m.clone());
            }
            None => {
                if let Some(map) = self.members.get_mut(&room) {
                    map.remove(&client);
                    if map.is_empty() {
                        self.members.remove(&room);
                    }
                }
            }
        }
        let Some(link) = &self.link else {
            // Joins are written by the refresh after the link is back; a leave lost now
            // expires with its entry.
            return;
        };
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let ttl = self.settings.presence_ttl.as_millis() as u64;
        tokio::spawn(async move {
            let _: RedisResult<Value> = match member {
                Some(m) => {
                    scripts
                        .presence_set
                        .key(&keys.presence)
                        .arg(ttl)
                        .arg(&client)
                        .arg(m.as_ref())
                        .invoke_async(&mut conn)
                        .await
                }
                None => {
                    redis::cmd("HDEL")
                        .arg(&keys.presence)
                        .arg(&client)
                        .query_async(&mut conn)
                        .await
                }
            };
        });
    }

    pub(super) fn spawn_members(&mut self, shard: usize, token: Token, room: RoomName) {
        let Some(link) = &self.link else {
            self.outlet.emit(shard, failed(token, "redis disconnected"));
            return;
        };
        let mut conn = link.cmd.clone();
        let scripts = self.scripts.clone();
        let outlet = self.outlet.clone();
        let keys = self.keys(&room);
        tokio::spawn(async move {
            let r: RedisResult<Value> = scripts
                .presence_get
                .key(&keys.presence)
                .invoke_async(&mut conn)
                .await;
            let event = match r
                .map_err(|e| e.to_string())
                .and_then(|v| scripts::parse_members(v).map_err(|e| e.to_string()))
            {
                Ok(members) => BrokerEvent::Members {
                    token,
                    room,
                    members,
                },
                Err(reason) => failed(token, &reason),
            };
            outlet.emit(shard, event);
        });
    }

    pub(super) fn refresh_presence(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        let ttl = self.settings.presence_ttl.as_millis() as u64;
        for (room, members) in &self.members {
            let keys = self.keys(room);
            let mut conn = link.cmd.clone();
            let scripts = self.scripts.clone();
            let members: Vec<(String, Bytes)> = members
                .iter()
                .map(|(c, m)| (c.clone(), m.clone()))
                .collect();
            tokio::spawn(async move {
                let mut inv = scripts.presence_set.key(&keys.presence);
                inv.arg(ttl);
                for (client, member) in &members {
                    inv.arg(client).arg(member.as_ref());
                }
                let _: RedisResult<Value> = inv.invoke_async(&mut conn).await;
            });
        }
    }
}
