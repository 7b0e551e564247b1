//! The broker's completions: answers to this shard's requests (appends, recoveries, reads,
//! member lists, documents) and what other nodes sent (their messages, live events, gaps).

use broker_bridge::{Appended, BrokerEvent, RoomName};
use bytes::Bytes;
use proto_codec::protocol::ErrorCode;

use crate::errors::OpFailure;
use crate::outgoing::{LiveEvent, LiveMsg};

use super::home::{parse_members, Pending};
use super::ShardCtx;

impl ShardCtx {
    /// Moves completed broker work forward (a networked broker's answers and echoes).
    pub(super) fn poll_broker(&self) {
        let mut events = Vec::new();
        self.broker.borrow_mut().poll_events(&mut events);
        for ev in events {
            match ev {
                BrokerEvent::Appended { token, message } => {
                    let origin = token
                        .and_then(|t| self.pending.borrow_mut().remove(&t))
                        .and_then(|p| match p {
                            Pending::Publish(origin) => Some(origin),
                            _ => None,
                        });
                    self.fan_out(message, origin, false);
                }
                BrokerEvent::Acked {
                    token,
                    room,
                    epoch,
                    offset,
                } => {
                    if let Some(Pending::Publish(origin)) = self.take_pending(token) {
                        self.answer_publish(
                            origin,
                            Ok(Appended {
                                room,
                                epoch,
                                offset,
                                data: Bytes::new(),
                                at: self.now.get(),
                            }),
                        );
                    }
                }
                BrokerEvent::DocLoaded {
                    token,
                    room: _,
                    snapshot,
                } => {
                    if let Some(Pending::DocLoad { room }) = self.take_pending(token) {
                        self.crdt_doc_loaded(&room, snapshot);
                    }
                }
                BrokerEvent::Recovered {
                    token,
                    room: _,
                    recovery,
                } => match self.take_pending(token) {
                    Some(Pending::Subscribe(sub)) => self.answer_subscribe(sub, Ok(recovery)),
                    Some(Pending::DocReplay { room }) => self.crdt_replayed(&room, recovery),
                    Some(Pending::History { room, answer }) => {
                        self.answer_history(&room, answer, Ok(recovery));
                    }
                    _ => {}
                },
                BrokerEvent::Members {
                    token,
                    room: _,
                    members,
                } => {
                    if let Some(Pending::Members { room, answer }) = self.take_pending(token) {
                        self.answer_members(&room, answer, Ok(parse_members(&members)));
                    }
                }
                BrokerEvent::Failed { token, reason } => match self.take_pending(token) {
                    Some(Pending::Publish(origin)) => {
                        self.answer_publish(
                            origin,
                            Err(OpFailure::new(ErrorCode::Unavailable, reason)),
                        );
                    }
                    Some(Pending::Subscribe(sub)) => self.answer_subscribe(sub, Err(reason)),
                    Some(Pending::History { room, answer }) => {
                        self.answer_history(&room, answer, Err(ErrorCode::Unavailable));
                    }
                    Some(Pending::Members { room, answer }) => {
                        self.answer_members(&room, answer, Err(ErrorCode::Unavailable));
                    }
                    Some(Pending::DocLoad { room } | Pending::DocReplay { room }) => {
                        self.crdt_load_failed(&room, &reason);
                    }
                    None => {}
                },
                BrokerEvent::Live { room, event } => {
                    let event = match event {
                        broker_bridge::LiveEvent::App(json) => LiveMsg::app_from_node(&json)
                            .and_then(|e| self.relayed_by_another_node(&room, e)),
                        broker_bridge::LiveEvent::Awareness(message) => self
                            .crdt_remote_awareness(&room, &message)
                            .map(LiveEvent::Awareness),
                    };
                    if let Some(event) = event {
                        self.fan_out_live(LiveMsg::new(room, event), None);
                    }
                }
                BrokerEvent::Gap {
                    room,
                    epoch,
                    from,
                    to,
                } => {
                    let gap = LiveEvent::Gap { epoch, from, to };
                    self.fan_out_live(LiveMsg::new(room, gap), None);
                }
            }
        }
    }

    /// A live app event another node relayed, by the rule its home applied there (a native
    /// event in a Pusher room carries the event `ringcast:message`): enforced here too, so a
    /// node that broke the rule cannot forge Pusher events on this one.
    pub(super) fn relayed_by_another_node(
        &self,
        room: &RoomName,
        event: LiveEvent,
    ) -> Option<LiveEvent> {
        match event {
            LiveEvent::Event { data, source } => {
                let data = self.kind_of(room).event_from(room, data, source)?;
                Some(LiveEvent::Event { data, source })
            }
            other => Some(other),
        }
    }

    pub(super) fn take_pending(&self, token: u64) -> Option<Pending> {
        self.pending.borrow_mut().remove(&token)
    }
}
