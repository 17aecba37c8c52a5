//! `Relay::spawn_expiry` really deletes what outlived the TTL (and the recipient never sees it), and
//! the relay's metrics move by the right amounts.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect, serve_relay};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tessera_channel::Identity;
use tessera_relay::protocol::codec::decode_reply;
use tessera_relay::protocol::{Envelope, ErrorCode, Reply};
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::Store;

fn env(identity: &Identity, ciphertext: &str) -> Envelope {
    Envelope {
        device: identity.public_key().to_string(),
        ciphertext: ciphertext.into(),
    }
}

#[tokio::test]
async fn spawn_expiry_deletes_what_outlived_the_ttl_and_the_recipient_never_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(&dir).await;
    let config = RelayConfig {
        message_ttl: Duration::from_secs(3600),
        ..common::config()
    };
    let relay = Relay::new(store.clone(), config);
    let relay_handle = relay.clone();
    let relay_server = serve_relay(dir, store.clone(), relay).await;
    let (alice_id, bob_id) = (Identity::generate(), Identity::generate());
    let bob_device = bob_id.public_key().to_string();
    let mut bob = connect(&relay_server, &bob_id).await;
    bob.register("bob", "ik-b", "sk-b").await.expect("bob");
    bob.close().await;
    let mut alice = connect(&relay_server, &alice_id).await;
    alice
        .register("alice", "ik-a", "sk-a")
        .await
        .expect("alice");
    alice
        .send("old", "bob", vec![env(&bob_id, "stale")])
        .await
        .expect("old");
    alice
        .send("young", "bob", vec![env(&bob_id, "fresh")])
        .await
        .expect("young");

    // Make "old" two hours old (its copy and its idempotency record), straight in the database file.
    let db = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(relay_server.dir.path().join("relay.db"))
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("db");
    for table in ["messages", "sent_messages"] {
        let sql =
            format!("UPDATE {table} SET stored_at = stored_at - 7200 WHERE message_id = 'old'");
        let changed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db)
            .await
            .expect("backdate")
            .rows_affected();
        assert_eq!(changed, 1, "{table}");
    }
    db.close().await;

    let mut passes = relay_handle.expiry_passes();
    let expiry = relay_handle.spawn_expiry(Duration::from_secs(3600));
    tokio::time::timeout(Duration::from_secs(10), passes.wait_for(|n| *n >= 1))
        .await
        .expect("an expiry pass in time")
        .expect("relay alive");
    expiry.abort();

    let left = store.pending(&bob_device, 0, 10).await.expect("pending");
    let ids: Vec<&str> = left.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["young"], "only the young message is left");

    // Bob comes back: in sequence order, "old" (seq 1) would come first; he gets "young" (seq 2).
    let mut bob = connect(&relay_server, &bob_id).await;
    let first = bob.next_delivery().await.expect("delivery");
    assert_eq!((first.message_id.as_str(), first.seq), ("young", 2));
    assert_eq!(first.ciphertext, "fresh");
    bob.ack(vec![first.reference()]).await.expect("ack");
    assert!(
        store
            .pending(&bob_device, 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );

    // The id of the expired send was forgotten with it: sent again, it is stored anew.
    let again = alice
        .send("old", "bob", vec![env(&bob_id, "again")])
        .await
        .expect("old again");
    assert!(!again, "not a duplicate after expiry");
    let next = bob.next_delivery().await.expect("delivery");
    assert_eq!(
        (next.message_id.as_str(), next.ciphertext.as_str()),
        ("old", "again")
    );
}

/// The debugging recorder hands out deltas (each snapshot swaps values to zero): sum them up.
struct Totals {
    snapshotter: Snapshotter,
    totals: HashMap<String, f64>,
}

impl Totals {
    fn value(&mut self, name: &str, label: Option<(&str, &str)>) -> f64 {
        for (key, _, _, v) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut id = key.name().to_string();
            for l in key.labels() {
                id.push_str(&format!("{{{}={}}}", l.key(), l.value()));
            }
            let delta = match v {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            *self.totals.entry(id).or_default() += delta;
        }
        let mut id = name.to_string();
        if let Some((k, v)) = label {
            id.push_str(&format!("{{{k}={v}}}"));
        }
        self.totals.get(&id).copied().unwrap_or(0.0)
    }
}

#[tokio::test]
async fn metrics_count_stored_delivered_redelivered_and_refused() {
    let recorder = DebuggingRecorder::new();
    let mut totals = Totals {
        snapshotter: recorder.snapshotter(),
        totals: HashMap::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(&dir).await;
    // The relay's metric handles are registered on this test's recorder (no global recorder).
    let relay =
        metrics::with_local_recorder(&recorder, || Relay::new(store.clone(), common::config()));
    let relay_server = serve_relay(dir, store.clone(), relay).await;
    let (alice_id, bob_id) = (Identity::generate(), Identity::generate());
    let mut bob = connect(&relay_server, &bob_id).await;
    bob.register("bob", "ik-b", "sk-b").await.expect("bob");
    let mut alice = connect(&relay_server, &alice_id).await;
    alice
        .register("alice", "ik-a", "sk-a")
        .await
        .expect("alice");
    assert_eq!(totals.value("tessera_relay_connections", None), 2.0);
    assert_eq!(
        totals.value("tessera_relay_messages_stored_total", None),
        0.0
    );

    for i in 0..3 {
        alice
            .send(&format!("m{i}"), "bob", vec![env(&bob_id, "c")])
            .await
            .expect("send");
    }
    // A duplicate stores nothing; a send to a device that is not bob's (nor alice's) is refused.
    assert!(
        alice
            .send("m0", "bob", vec![env(&bob_id, "c")])
            .await
            .expect("dup")
    );
    let refused = alice
        .send("m9", "bob", vec![env(&Identity::generate(), "c")])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        totals.value("tessera_relay_messages_stored_total", None),
        3.0
    );
    assert_eq!(
        totals.value(
            "tessera_relay_refused_total",
            Some(("code", "unknown_device"))
        ),
        1.0
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bob.next_delivery().await.expect("delivery"));
    }
    assert_eq!(totals.value("tessera_relay_deliveries_total", None), 3.0);

    // Not acknowledged: a new connection of bob's gets all three again.
    bob.close().await;
    let mut bob = connect(&relay_server, &bob_id).await;
    for _ in 0..3 {
        got.push(bob.next_delivery().await.expect("redelivery"));
    }
    assert_eq!(totals.value("tessera_relay_deliveries_total", None), 6.0);
    bob.ack(got.iter().take(3).map(|d| d.reference()).collect())
        .await
        .expect("ack");
    assert_eq!(
        totals.value("tessera_relay_messages_stored_total", None),
        3.0
    );

    // A malformed frame is counted under its code.
    let stranger = Identity::generate();
    let mut channel = common::connector()
        .connect(&relay_server.url, relay_server.key, &stranger)
        .await
        .expect("connect");
    channel.send(b"not json".to_vec()).await.expect("send");
    let reply = channel.recv().await.expect("recv").expect("open");
    let reply = decode_reply(&reply).expect("reply");
    assert!(
        matches!(
            reply,
            Reply::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(
        totals.value("tessera_relay_refused_total", Some(("code", "malformed"))),
        1.0
    );
    assert_eq!(
        totals.value("tessera_relay_refused_total", Some(("code", "invalid"))),
        0.0
    );
}
