//! Metric names and the handles each shard keeps (looked up once, so counting on the hot path is
//! one atomic add). Names follow `ringcast_<noun>_<unit>`; no label takes unbounded values.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// Describes every metric (HELP lines in `/metrics`).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "ringcast_connections",
        "Open connections: WebSocket, SSE streams and held long polls."
    );
    describe_counter!(
        "ringcast_limit_hits_total",
        "Limits that answered, by limit (ops, publish, rate_limit_close, connections_per_user, token_expired_close, refresh_failed, refresh_denied)."
    );
    describe_counter!(
        "ringcast_slow_consumer_actions_total",
        "Room messages a slow-consumer policy dropped for one subscriber, by action (drop_oldest, conflate, max_age), and live frames (events, join, leave) dropped under pressure (live_dropped). Closes are ringcast_slow_consumer_closes_total."
    );
    describe_counter!(
        "ringcast_crdt_refused_total",
        "Updates to collaborative rooms refused before they were stored, by error code (bad_request: malformed; too_large: the document is at max_document_bytes)."
    );
    describe_counter!(
        "ringcast_crdt_loads_total",
        "Collaborative documents loaded on a home shard (snapshot plus the updates stored after it)."
    );
    describe_counter!(
        "ringcast_crdt_snapshots_total",
        "Collaborative document snapshots stored through the broker."
    );
    describe_histogram!(
        "ringcast_crdt_snapshot_bytes",
        Unit::Bytes,
        "Size of each stored document snapshot."
    );
    describe_counter!(
        "ringcast_ops_denied_total",
        "Ops refused by permissions, by error code (forbidden, unauthorized)."
    );
    describe_counter!(
        "ringcast_connections_total",
        "WebSocket connections accepted (upgraded)."
    );
    describe_counter!(
        "ringcast_handshake_failures_total",
        "Connections refused or dropped before the upgrade, by reason."
    );
    describe_counter!(
        "ringcast_frames_in_total",
        "WebSocket messages and control frames received."
    );
    describe_counter!("ringcast_frames_out_total", "WebSocket frames written.");
    describe_counter!(
        "ringcast_bytes_in_total",
        Unit::Bytes,
        "Bytes read from clients."
    );
    describe_counter!(
        "ringcast_bytes_out_total",
        Unit::Bytes,
        "Bytes written to clients."
    );
    describe_counter!(
        "ringcast_publishes_total",
        "Messages published (accepted and given an offset)."
    );
    describe_counter!(
        "ringcast_deliveries_total",
        "Room messages queued to subscribers."
    );
    describe_counter!(
        "ringcast_slow_consumer_closes_total",
        "Connections closed with 4008."
    );
    describe_counter!(
        "ringcast_protocol_errors_total",
        "Connections closed for a WebSocket protocol error."
    );
    describe_counter!(
        "ringcast_op_errors_total",
        "Ops answered with an error event."
    );
    describe_gauge!(
        "ringcast_mailbox_depth",
        "Cross-shard messages waiting, per shard."
    );
    describe_gauge!(
        "ringcast_outbound_queued_bytes",
        Unit::Bytes,
        "Bytes queued to clients, per shard."
    );
    describe_gauge!(
        "ringcast_rooms",
        "Rooms with state on their home shard, per shard."
    );
    describe_gauge!(
        "ringcast_connection_task_bytes",
        metrics::Unit::Bytes,
        "Size of one connection task's future (allocated per connection for its whole life)."
    );
    describe_histogram!(
        "ringcast_write_pass_seconds",
        Unit::Seconds,
        "One shard write pass, from its first write to its last: how long the last subscriber \
         of a burst waits behind the first."
    );
    describe_histogram!(
        "ringcast_write_pass_connections",
        "Connections written in one shard write pass."
    );
    describe_histogram!(
        "ringcast_publish_to_write_seconds",
        Unit::Seconds,
        "From publish (offset assigned) to the write of the frame to a subscriber's socket, by \
         namespace; sampled once per connection flush or shard write pass (the oldest message of its \
         last write). Every write is in GET /api/slo."
    );
}

/// Handles one shard updates.
#[derive(Clone)]
pub struct ShardMetrics {
    /// Open connections.
    pub connections: Gauge,
    /// Accepted connections.
    pub connections_total: Counter,
    /// Frames in.
    pub frames_in: Counter,
    /// Frames out.
    pub frames_out: Counter,
    /// Bytes in.
    pub bytes_in: Counter,
    /// Bytes out.
    pub bytes_out: Counter,
    /// Publishes.
    pub publishes: Counter,
    /// Deliveries.
    pub deliveries: Counter,
    /// Slow-consumer closes.
    pub slow_consumer_closes: Counter,
    /// Protocol errors.
    pub protocol_errors: Counter,
    /// Op errors.
    pub op_errors: Counter,
    /// Mailbox depth.
    pub mailbox_depth: Gauge,
    /// Outbound queued bytes.
    pub outbound_queued: Gauge,
    /// Rooms homed here.
    pub rooms: Gauge,
    /// Publish to write latency.
    pub publish_to_write: Vec<Histogram>,
    /// Size of a connection task's future.
    pub connection_task_bytes: Gauge,
    /// Duration of a write pass.
    pub write_pass_seconds: Histogram,
    /// Connections per write pass.
    pub write_pass_connections: Histogram,
}

impl ShardMetrics {
    /// Handles for shard `shard`.
    pub fn new(shard: usize, namespaces: &crate::namespaces::Namespaces) -> ShardMetrics {
        let s = shard.to_string();
        ShardMetrics {
            connections: gauge!("ringcast_connections"),
            connections_total: counter!("ringcast_connections_total"),
            frames_in: counter!("ringcast_frames_in_total"),
            frames_out: counter!("ringcast_frames_out_total"),
            bytes_in: counter!("ringcast_bytes_in_total"),
            bytes_out: counter!("ringcast_bytes_out_total"),
            publishes: counter!("ringcast_publishes_total"),
            deliveries: counter!("ringcast_deliveries_total"),
            slow_consumer_closes: counter!("ringcast_slow_consumer_closes_total"),
            protocol_errors: counter!("ringcast_protocol_errors_total"),
            op_errors: counter!("ringcast_op_errors_total"),
            mailbox_depth: gauge!("ringcast_mailbox_depth", "shard" => s.clone()),
            outbound_queued: gauge!("ringcast_outbound_queued_bytes", "shard" => s.clone()),
            rooms: gauge!("ringcast_rooms", "shard" => s),
            publish_to_write: (0..namespaces.len())
                .map(|i| {
                    let name = namespaces.by_index(i).name.to_string();
                    histogram!("ringcast_publish_to_write_seconds", "namespace" => name)
                })
                .collect(),
            connection_task_bytes: gauge!("ringcast_connection_task_bytes"),
            write_pass_seconds: histogram!("ringcast_write_pass_seconds"),
            write_pass_connections: histogram!("ringcast_write_pass_connections"),
        }
    }
}

/// Counts a refused or failed handshake.
pub fn handshake_failure(reason: &'static str) {
    counter!("ringcast_handshake_failures_total", "reason" => reason).increment(1);
}

/// Counts a limit that answered (an op refused by a rate, a close for a limit).
pub fn limit_hit(limit: &'static str) {
    counter!("ringcast_limit_hits_total", "limit" => limit).increment(1);
}

/// Counts a panic contained while handling one client's input (`contain`).
pub fn contained_panic(what: &'static str) {
    counter!("ringcast_contained_panics_total", "what" => what).increment(1);
}

/// Counts an awareness state not kept (`reason`: `foreign`, `room_full`, `per_connection`,
/// `size`).
pub fn awareness_refused(reason: &'static str) {
    counter!("ringcast_crdt_awareness_refused_total", "reason" => reason).increment(1);
}

/// Counts an update refused by a collaborative room.
pub fn crdt_refused(code: &'static str) {
    counter!("ringcast_crdt_refused_total", "code" => code).increment(1);
}

/// Counts a collaborative document loaded.
pub fn crdt_loaded() {
    counter!("ringcast_crdt_loads_total").increment(1);
}

/// Counts a stored snapshot and its size.
pub fn crdt_snapshot(bytes: usize) {
    counter!("ringcast_crdt_snapshots_total").increment(1);
    metrics::histogram!("ringcast_crdt_snapshot_bytes").record(bytes as f64);
}

/// Counts what slow-consumer policies did.
pub fn slow_consumer_actions(a: crate::connection::outbox::PolicyActions) {
    for (action, n) in [
        ("drop_oldest", a.dropped_oldest),
        ("conflate", a.conflated),
        ("max_age", a.expired),
        ("live_dropped", a.live_dropped),
    ] {
        if n > 0 {
            counter!("ringcast_slow_consumer_actions_total", "action" => action).increment(n);
        }
    }
}

/// Counts an op refused by permissions (`forbidden` or `unauthorized`).
pub fn op_denied(code: &'static str) {
    counter!("ringcast_ops_denied_total", "code" => code).increment(1);
}
