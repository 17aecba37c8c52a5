//! The SQLite store against a real database file in a temporary directory.

use tessera_relay::invite::token_hash;
use tessera_relay::protocol::{Envelope, MessageRef, PreKey};
use tessera_relay::store::{Admission, Enqueued, Registration, SqliteStore, Store, StoreError};

fn reg<'a>(username: &'a str, device: &'a str, ik: &'a str, sk: &'a str) -> Registration<'a> {
    Registration {
        username,
        device,
        identity_key: ik,
        signing_key: sk,
    }
}

const FAR: i64 = i64::MAX / 2;

fn env(device: &str, ciphertext: &str) -> Envelope {
    Envelope {
        device: device.into(),
        ciphertext: ciphertext.into(),
    }
}

fn key(id: &str) -> PreKey {
    PreKey {
        key_id: id.into(),
        key: format!("pub-{id}"),
    }
}

fn acked(from: &str, id: &str, seq: u64) -> MessageRef {
    MessageRef {
        from_device: from.into(),
        message_id: id.into(),
        seq,
    }
}

/// A second pool on the store's database file, beside the store (to look at or tamper with what it
/// wrote), read-only or not.
async fn side_pool(path: &std::path::Path, read_only: bool) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .read_only(read_only)
            .busy_timeout(std::time::Duration::from_secs(5)),
    )
    .await
    .expect("a second pool on the database")
}

/// A fresh store whose device queues hold at most `max` messages, with [`two_users`] registered (the
/// directory lives as long as the returned guard).
async fn two_users_with_queues_of(max: u64) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("dir");
    let limits = tessera_relay::store::StoreLimits {
        max_queued_per_device: max,
    };
    let store = SqliteStore::open_with(dir.path().join("relay.db"), limits)
        .await
        .expect("open");
    two_users(&store).await;
    (dir, store)
}

async fn two_users(store: &SqliteStore) {
    store
        .register_device(&reg("alice", "a1", "ik-a1", "sk-a1"), &Admission::default())
        .await
        .expect("a1");
    store
        .create_invite(&token_hash("link-a"), Some("alice"), FAR)
        .await
        .expect("link token");
    let link = token_hash("link-a");
    let admission = Admission {
        invite_only: false,
        token_hash: Some(&link),
    };
    store
        .register_device(&reg("alice", "a2", "ik-a2", "sk-a2"), &admission)
        .await
        .expect("a2");
    store
        .register_device(&reg("bob", "b1", "ik-b1", "sk-b1"), &Admission::default())
        .await
        .expect("b1");
}

#[tokio::test]
async fn registration_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    // Identical re-registration is a no-op; another account cannot take the device.
    store
        .register_device(&reg("alice", "a1", "ik-a1", "sk-a1"), &Admission::default())
        .await
        .expect("again");
    let taken = store
        .register_device(&reg("mallory", "a1", "x", "y"), &Admission::default())
        .await;
    assert!(
        matches!(taken, Err(StoreError::DeviceTaken { .. })),
        "{taken:?}"
    );
    let record = store.device("a1").await.expect("device").expect("some");
    assert_eq!(record.username, "alice");
    assert_eq!(record.identity_key, "ik-a1");
    assert!(store.device("zz").await.expect("device").is_none());
    assert!(matches!(
        store.fetch_bundles("nobody").await,
        Err(StoreError::UnknownUser { .. })
    ));
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_fallback_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    store
        .publish_prekeys("b1", &[key("1"), key("2")], Some(&key("f1")))
        .await
        .expect("publish");
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let bundles = store.fetch_bundles("bob").await.expect("bundle");
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0].identity_key, "ik-b1");
        assert_eq!(bundles[0].fallback_key, Some(key("f1")));
        claimed.push(bundles[0].one_time_key.clone());
    }
    assert_eq!(claimed, vec![Some(key("1")), Some(key("2")), None]);
    // A new fallback replaces the old one.
    store
        .publish_prekeys("b1", &[], Some(&key("f2")))
        .await
        .expect("publish");
    let bundles = store.fetch_bundles("bob").await.expect("bundle");
    assert_eq!(bundles[0].fallback_key, Some(key("f2")));
    assert!(matches!(
        store.publish_prekeys("zz", &[key("9")], None).await,
        Err(StoreError::UnknownDevice { .. })
    ));
}

#[tokio::test]
async fn sequences_idempotence_and_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    // To bob's device and a copy to alice's other device.
    let first = store
        .enqueue(
            "a1",
            "m1",
            "bob",
            &[env("b1", "c-b1-1"), env("a2", "c-a2-1")],
        )
        .await
        .expect("enqueue");
    assert_eq!(first.copies(), [("b1".to_owned(), 1), ("a2".to_owned(), 1)]);
    let retry = store
        .enqueue("a1", "m1", "bob", &[env("b1", "other")])
        .await
        .expect("retry");
    assert_eq!(retry, Enqueued::Duplicate);
    let second = store
        .enqueue("a1", "m2", "bob", &[env("b1", "c-b1-2")])
        .await
        .expect("m2");
    assert_eq!(second.copies(), [("b1".to_owned(), 2)]);

    // A device that is not bob's nor alice's: nothing stored, and the id stays usable.
    store
        .register_device(&reg("carol", "c1", "ik", "sk"), &Admission::default())
        .await
        .expect("c1");
    let stray = store
        .enqueue("a1", "m3", "bob", &[env("b1", "x"), env("c1", "y")])
        .await;
    assert!(
        matches!(stray, Err(StoreError::NotARecipient { .. })),
        "{stray:?}"
    );
    assert!(
        store
            .pending("c1", 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );

    let pending = store.pending("b1", 0, 10).await.expect("pending");
    let seen: Vec<_> = pending
        .iter()
        .map(|m| (m.seq, m.ciphertext.as_str(), m.from_user.as_str()))
        .collect();
    assert_eq!(seen, vec![(1, "c-b1-1", "alice"), (2, "c-b1-2", "alice")]);
    assert_eq!(store.pending("b1", 1, 10).await.expect("after 1").len(), 1);

    assert_eq!(
        store
            .ack("b1", &[acked("a1", "m1", 1), acked("a1", "m1", 1)])
            .await
            .expect("ack"),
        1
    );
    // A stored sequence number under another message id, or another sender, deletes nothing.
    assert_eq!(
        store
            .ack("b1", &[acked("a1", "nope", 2), acked("a2", "m2", 2)])
            .await
            .expect("ack"),
        0
    );
    let left = store.pending("b1", 0, 10).await.expect("pending");
    assert_eq!(left.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        store
            .device("b1")
            .await
            .expect("d")
            .expect("b1")
            .last_acked_seq,
        1
    );

    // After deletion, a retry of an acknowledged message is still recognised, and sequence numbers
    // are never reused.
    assert_eq!(
        store
            .enqueue("a1", "m1", "bob", &[env("b1", "z")])
            .await
            .expect("r"),
        Enqueued::Duplicate
    );
    let third = store
        .enqueue("a1", "m4", "bob", &[env("b1", "c-b1-4")])
        .await
        .expect("m4");
    assert_eq!(third.copies(), [("b1".to_owned(), 3)]);
}

#[tokio::test]
async fn state_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    {
        let store = SqliteStore::open(&path).await.expect("open");
        two_users(&store).await;
        store
            .publish_prekeys("b1", &[key("1")], Some(&key("f")))
            .await
            .expect("publish");
        for i in 1..=5 {
            store
                .enqueue(
                    "a1",
                    &format!("m{i}"),
                    "bob",
                    &[env("b1", &format!("c{i}"))],
                )
                .await
                .expect("enqueue");
        }
        store
            .ack("b1", &[acked("a1", "m1", 1), acked("a1", "m2", 2)])
            .await
            .expect("ack");
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(
        store.schema_version().await.expect("version"),
        tessera_relay::store::sqlite::MIGRATIONS.len() as i64
    );
    let left: Vec<_> = store
        .pending("b1", 0, 100)
        .await
        .expect("pending")
        .into_iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, vec![3, 4, 5]);
    assert_eq!(
        store
            .device("b1")
            .await
            .expect("d")
            .expect("b1")
            .last_acked_seq,
        2
    );
    assert_eq!(
        store
            .enqueue("a1", "m5", "bob", &[env("b1", "x")])
            .await
            .expect("dup"),
        Enqueued::Duplicate
    );
    assert_eq!(
        store
            .enqueue("a1", "m6", "bob", &[env("b1", "c6")])
            .await
            .expect("m6")
            .copies(),
        [("b1".to_owned(), 6)]
    );
    let bundles = store.fetch_bundles("bob").await.expect("bundle");
    assert_eq!(bundles[0].one_time_key, Some(key("1")));
}

#[tokio::test]
async fn remove_device_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    store
        .publish_prekeys("a2", &[key("1")], Some(&key("f")))
        .await
        .expect("publish");
    store
        .enqueue("b1", "m1", "alice", &[env("a1", "x"), env("a2", "y")])
        .await
        .expect("send");
    // Another account's device cannot be removed; one's own other device can, with what it held.
    assert!(matches!(
        store.remove_device("b1", "a2").await,
        Err(StoreError::NotYourDevice { .. })
    ));
    assert!(store.remove_device("a1", "a2").await.expect("remove"));
    assert!(!store.remove_device("a1", "a2").await.expect("again"));
    assert!(store.device("a2").await.expect("device").is_none());
    assert!(
        store
            .pending("a2", 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );
    let bundles = store.fetch_bundles("alice").await.expect("bundles");
    assert_eq!(
        bundles
            .iter()
            .map(|b| b.device.as_str())
            .collect::<Vec<_>>(),
        vec!["a1"]
    );

    // Nothing is younger than a cutoff in the past; everything is older than one in the future.
    assert_eq!(store.expire(0).await.expect("expire"), 0);
    assert_eq!(store.pending("a1", 0, 10).await.expect("pending").len(), 1);
    assert_eq!(store.expire(i64::MAX).await.expect("expire"), 1);
    assert!(
        store
            .pending("a1", 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );
    // The idempotency record expired too: the id may be reused.
    assert!(matches!(
        store
            .enqueue("b1", "m1", "alice", &[env("a1", "z")])
            .await
            .expect("reuse"),
        Enqueued::Stored { .. }
    ));
}

#[tokio::test]
async fn visibility_is_own_account_and_conversations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    store
        .register_device(&reg("carol", "c1", "ik", "sk"), &Admission::default())
        .await
        .expect("c1");
    let names =
        |users: Vec<(String, Vec<String>)>| users.into_iter().map(|(u, _)| u).collect::<Vec<_>>();
    assert_eq!(
        names(store.visible_users("a1").await.expect("a1")),
        vec!["alice"]
    );
    store
        .enqueue("a1", "m1", "bob", &[env("b1", "x")])
        .await
        .expect("send");
    let seen_by_bob = store.visible_users("b1").await.expect("b1");
    assert_eq!(
        seen_by_bob,
        vec![
            (
                "alice".to_string(),
                vec!["a1".to_string(), "a2".to_string()]
            ),
            ("bob".to_string(), vec!["b1".to_string()])
        ]
    );
    assert_eq!(
        names(store.visible_users("a2").await.expect("a2")),
        vec!["alice", "bob"]
    );
    assert_eq!(
        names(store.visible_users("c1").await.expect("c1")),
        vec!["carol"]
    );
    assert!(matches!(
        store.visible_users("zz").await,
        Err(StoreError::UnknownDevice { .. })
    ));
}

#[tokio::test]
async fn admission_invites_and_link_tokens_are_single_use_bound_and_expire() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    fn invite_only(hash: Option<&str>) -> Admission<'_> {
        Admission {
            invite_only: true,
            token_hash: hash,
        }
    }
    let hash = |t: &str| token_hash(t);
    // Invite-only: no token, an unknown token, a link token of another account are all refused.
    let refused = store
        .register_device(&reg("alice", "a1", "ik", "sk"), &invite_only(None))
        .await;
    assert!(matches!(refused, Err(StoreError::InviteRequired { .. })));
    let unknown = hash("nope");
    let refused = store
        .register_device(
            &reg("alice", "a1", "ik", "sk"),
            &invite_only(Some(&unknown)),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::InviteRequired { .. })));
    store
        .create_invite(&hash("inv"), None, FAR)
        .await
        .expect("invite");
    let inv = hash("inv");
    store
        .register_device(&reg("alice", "a1", "ik", "sk"), &invite_only(Some(&inv)))
        .await
        .expect("invited");
    // Single use.
    let again = store
        .register_device(&reg("bob", "b1", "ik", "sk"), &invite_only(Some(&inv)))
        .await;
    assert!(matches!(again, Err(StoreError::InviteRequired { .. })));
    // The same device re-registering needs nothing.
    store
        .register_device(&reg("alice", "a1", "ik2", "sk2"), &invite_only(None))
        .await
        .expect("same device");
    // A second device of alice: an open relay still wants alice's link token.
    let open = Admission::default();
    let refused = store
        .register_device(&reg("alice", "a2", "ik", "sk"), &open)
        .await;
    assert!(matches!(refused, Err(StoreError::InviteRequired { .. })));
    store
        .create_invite(&hash("link-bob"), Some("bob"), FAR)
        .await
        .expect("bob's link");
    let bobs = hash("link-bob");
    let with_bobs = Admission {
        invite_only: false,
        token_hash: Some(&bobs),
    };
    let refused = store
        .register_device(&reg("alice", "a2", "ik", "sk"), &with_bobs)
        .await;
    assert!(
        matches!(refused, Err(StoreError::InviteRequired { .. })),
        "a token bound to bob does not admit a device of alice"
    );
    store
        .create_invite(&hash("expired"), Some("alice"), 1)
        .await
        .expect("expired link");
    let expired = hash("expired");
    let refused = store
        .register_device(
            &reg("alice", "a2", "ik", "sk"),
            &Admission {
                invite_only: false,
                token_hash: Some(&expired),
            },
        )
        .await;
    assert!(matches!(refused, Err(StoreError::InviteRequired { .. })));
    store
        .create_invite(&hash("link-alice"), Some("alice"), FAR)
        .await
        .expect("alice's link");
    let alices = hash("link-alice");
    store
        .register_device(
            &reg("alice", "a2", "ik-a2", "sk-a2"),
            &Admission {
                invite_only: true,
                token_hash: Some(&alices),
            },
        )
        .await
        .expect("linked device");
    let devices = store.list_devices("alice").await.expect("devices");
    let ids: Vec<_> = devices.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(devices[1].identity_key, "ik-a2");
    assert!(matches!(
        store.list_devices("nobody").await,
        Err(StoreError::UnknownUser { .. })
    ));
}

#[tokio::test]
async fn a_group_commit_stores_the_good_sends_and_nothing_of_a_refused_one() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    // Sent all at once, these share group commits; one of them names a device that is not bob's.
    let sends = (0..40).map(|i| {
        let store = store.clone();
        async move {
            let target = if i == 17 { "nobody" } else { "b1" };
            let id = format!("g{i}");
            store
                .enqueue("a1", &id, "bob", &[env(target, &format!("c{i}"))])
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    for (i, result) in results.iter().enumerate() {
        if i == 17 {
            assert!(
                matches!(result, Err(StoreError::NotARecipient { .. })),
                "{result:?}"
            );
        } else {
            assert!(
                matches!(result, Ok(Enqueued::Stored { .. })),
                "{i}: {result:?}"
            );
        }
    }
    let stored = store.pending("b1", 0, 100).await.expect("pending");
    assert_eq!(stored.len(), 39);
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(!stored.iter().any(|m| m.message_id == "g17"));
    // The refused id was not recorded: sent again to the right device, it is stored.
    let retried = store
        .enqueue("a1", "g17", "bob", &[env("b1", "c17")])
        .await
        .expect("retry");
    assert!(matches!(retried, Enqueued::Stored { .. }));
}

#[tokio::test]
async fn a_device_queue_is_bounded_and_acks_make_room() {
    let (_dir, store) = two_users_with_queues_of(3).await;
    for i in 0..3 {
        store
            .enqueue("a1", &format!("q{i}"), "bob", &[env("b1", "c")])
            .await
            .expect("room");
    }
    let full = store.enqueue("a1", "q3", "bob", &[env("b1", "c")]).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { .. })),
        "{full:?}"
    );
    // Refused whole: a copy for alice's other device in the same send is not stored either, and the
    // id is not spent.
    let both = store
        .enqueue("a1", "q3", "bob", &[env("a2", "copy"), env("b1", "c")])
        .await;
    assert!(
        matches!(both, Err(StoreError::QueueFull { .. })),
        "{both:?}"
    );
    assert!(store.pending("a2", 0, 10).await.expect("a2").is_empty());
    store.ack("b1", &[acked("a1", "q0", 1)]).await.expect("ack");
    let stored = store
        .enqueue("a1", "q3", "bob", &[env("b1", "c")])
        .await
        .expect("room again");
    assert!(matches!(stored, Enqueued::Stored { .. }));
    assert_eq!(store.pending("b1", 0, 10).await.expect("b1").len(), 3);
}

#[tokio::test]
async fn sends_in_one_group_commit_see_each_other() {
    let (_dir, store) = two_users_with_queues_of(5).await;
    // 12 sends at once (they share runs of the group commit): ids d0..d5 each twice, and the queue of
    // b1 holds 5: exactly five are stored, each id at most once; the rest are duplicates or refused
    // (a full queue is checked before the id), whatever the order.
    let sends = (0..12).map(|i| {
        let store = store.clone();
        async move {
            let id = format!("d{}", i % 6);
            store
                .enqueue("a1", &id, "bob", &[env("b1", &format!("c{i}"))])
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let stored = results
        .iter()
        .filter(|r| matches!(r, Ok(Enqueued::Stored { .. })))
        .count();
    let duplicates = results
        .iter()
        .filter(|r| matches!(r, Ok(Enqueued::Duplicate)))
        .count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::QueueFull { .. })))
        .count();
    assert_eq!(stored, 5, "{results:?}");
    assert!(full >= 1, "{results:?}");
    assert_eq!(stored + duplicates + full, 12, "{results:?}");
    let queued = store.pending("b1", 0, 100).await.expect("pending");
    let seqs: Vec<u64> = queued.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let mut ids: Vec<&str> = queued.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one copy per id");

    // One device twice in a send: refused, nothing stored, the id not spent.
    store
        .ack("b1", &[acked("a1", &queued[0].message_id, queued[0].seq)])
        .await
        .expect("ack");
    let twice = store
        .enqueue("a1", "t1", "bob", &[env("b1", "x"), env("b1", "y")])
        .await;
    assert!(
        matches!(twice, Err(StoreError::RepeatedDevice { .. })),
        "{twice:?}"
    );
    let once = store
        .enqueue("a1", "t1", "bob", &[env("b1", "x")])
        .await
        .expect("t1");
    assert_eq!(once.copies(), [("b1".to_owned(), 6)]);
}

#[tokio::test]
async fn a_failed_group_commit_stores_nothing_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("relay.db");
    let store = SqliteStore::open(&path).await.expect("open");
    two_users(&store).await;
    store
        .enqueue("a1", "before", "bob", &[env("b1", "fine")])
        .await
        .expect("before");
    // A real database error in the middle of a batch: SQLite aborts the insert of one copy.
    let db = side_pool(&path, false).await;
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.ciphertext = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .execute(&db)
    .await
    .expect("trigger");
    // Queued together (this test's runtime runs the writer only once all are waiting): one batch.
    let sends = (0..10).map(|i| {
        let store = store.clone();
        async move {
            let text = if i == 4 { "poison" } else { "good" };
            store
                .enqueue("a1", &format!("p{i}"), "bob", &[env("b1", text)])
                .await
        }
    });
    let refs = [acked("a1", "before", 1)];
    let ack = store.ack("b1", &refs);
    let (results, acked_result) = tokio::join!(futures_util::future::join_all(sends), ack);
    for result in &results {
        assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
    }
    assert!(
        matches!(acked_result, Err(StoreError::Database(_))),
        "{acked_result:?}"
    );
    // Nothing of the batch was stored, the ack included.
    let left = store.pending("b1", 0, 100).await.expect("pending");
    let ids: Vec<&str> = left.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["before"]);
    sqlx::query("DROP TRIGGER poison")
        .execute(&db)
        .await
        .expect("drop");
    db.close().await;
    // The writer goes on (no transaction left open), and the failed ids were not spent.
    let retried = store
        .enqueue("a1", "p4", "bob", &[env("b1", "now fine")])
        .await
        .expect("retry");
    assert_eq!(retried.copies(), [("b1".to_owned(), 2)]);
    assert_eq!(
        store
            .ack("b1", &[acked("a1", "before", 1)])
            .await
            .expect("ack"),
        1
    );
}

#[tokio::test]
async fn a_huge_ack_does_not_fail_the_batch_it_shares() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    two_users(&store).await;
    store
        .enqueue("a1", "h0", "bob", &[env("b1", "c")])
        .await
        .expect("h0");
    // 20,000 references (40,001 bound values: more than SQLite takes in one statement), through the
    // store directly (the relay allows 1,000 per ack), in the same batch as a send.
    let mut refs: Vec<MessageRef> = (0..20_000)
        .map(|i| acked("a1", &format!("x{i}"), 1_000 + i))
        .collect();
    refs.push(acked("a1", "h0", 1));
    let envelopes = [env("b1", "c")];
    let (acked_count, sent) = tokio::join!(
        store.ack("b1", &refs),
        store.enqueue("a1", "h1", "bob", &envelopes)
    );
    assert_eq!(acked_count.expect("ack"), 1);
    assert_eq!(sent.expect("send").copies(), [("b1".to_owned(), 2)]);
    let left = store.pending("b1", 0, 10).await.expect("pending");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, "h1");
}

/// A device acking the same messages on two connections at once (both acks in one group commit): the
/// messages are deleted once, counted for one ack only, and the queue's counter is not decremented twice
/// (a full queue accepts exactly as many new messages as were acknowledged).
#[tokio::test]
async fn the_same_messages_acked_twice_at_once_count_once() {
    let (_dir, store) = two_users_with_queues_of(4).await;
    for i in 0..4 {
        store
            .enqueue("a1", &format!("m{i}"), "bob", &[env("b1", "c")])
            .await
            .expect("room");
    }
    let refs = [acked("a1", "m0", 1), acked("a1", "m1", 2)];
    let overlapping = [acked("a1", "m1", 2), acked("a1", "m2", 3)];
    let (first, second) = tokio::join!(store.ack("b1", &refs), store.ack("b1", &overlapping));
    let (first, second) = (first.expect("ack"), second.expect("ack"));
    assert_eq!(first + second, 3, "m0, m1 and m2 deleted once each");
    let left = store.pending("b1", 0, 10).await.expect("pending");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, "m3");
    // Three places freed, not four: the fourth new message finds the queue full.
    for i in 4..7 {
        store
            .enqueue("a1", &format!("m{i}"), "bob", &[env("b1", "c")])
            .await
            .expect("room");
    }
    let full = store.enqueue("a1", "m7", "bob", &[env("b1", "c")]).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { .. })),
        "{full:?}"
    );
}

/// A database written under schema 4 (before the queue layout of migration 5) keeps everything when it
/// is opened: its queued messages in order under their sequence numbers, each queue's counters, the
/// idempotency records; new sends continue each device's sequence, acks by sequence number find the old
/// messages, and a device registered afterwards gets a number of its own.
#[tokio::test]
async fn a_schema_4_database_migrates_with_its_queues() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("relay.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("create");
        sqlx::raw_sql("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            .execute(&mut conn)
            .await
            .expect("versions");
        for (index, sql) in tessera_relay::store::sqlite::MIGRATIONS[..4]
            .iter()
            .enumerate()
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut conn)
                .await
                .expect("old migration");
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(index as i64 + 1)
                .execute(&mut conn)
                .await
                .expect("version");
        }
        // Alice sent m1..m5 to bob's b1 (seqs 1..5) and a copy of m5 to her a2; b1 acked 1 and 2. A
        // device removed before (a gap in the numbers), b1's counter of queued messages drifted (7, for
        // 3 stored), prekeys and contacts.
        let rows = format!(
            "INSERT INTO accounts VALUES ('alice', 0), ('bob', 0);
             INSERT INTO devices (device_id, username, identity_key, signing_key, next_seq,
                 last_acked_seq, created_at, queued) VALUES
                 ('a1', 'alice', 'ik-a1', 'sk-a1', 0, 0, 0, 0),
                 ('gone', 'bob', 'ik', 'sk', 0, 0, 0, 0),
                 ('b1', 'bob', 'ik-b1', 'sk-b1', 5, 2, 0, 7),
                 ('a2', 'alice', 'ik-a2', 'sk-a2', 1, 0, 0, 1);
             DELETE FROM devices WHERE device_id = 'gone';
             INSERT INTO one_time_keys VALUES ('b1', 'k1', 'pub-k1');
             INSERT INTO fallback_keys VALUES ('b1', 'f', 'pub-f');
             INSERT INTO contacts VALUES ('alice', 'bob'), ('bob', 'alice');
             INSERT INTO messages VALUES
                 ('b1', 3, 'a1', 'alice', 'm3', 'c3', {now}),
                 ('b1', 4, 'a1', 'alice', 'm4', 'c4', {now}),
                 ('a2', 1, 'a1', 'alice', 'm5', 'copy5', {now}),
                 ('b1', 5, 'a1', 'alice', 'm5', 'c5', {now});
             INSERT INTO sent_messages VALUES ('a1', 'm1', {now}), ('a1', 'm2', {now}),
                 ('a1', 'm3', {now}), ('a1', 'm4', {now}), ('a1', 'm5', {now});"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(rows))
            .execute(&mut conn)
            .await
            .expect("rows");
        conn.close().await.expect("close");
    }
    let store = SqliteStore::open(&path).await.expect("migrate");
    assert_eq!(
        store.schema_version().await.expect("version"),
        tessera_relay::store::sqlite::MIGRATIONS.len() as i64
    );
    let inspect = side_pool(&path, true).await;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&inspect)
        .await
        .expect("integrity");
    assert_eq!(check, "ok");
    let dangling: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&inspect)
        .await
        .expect("foreign keys");
    assert!(dangling.is_empty(), "{} dangling rows", dangling.len());
    // The counter of queued messages is recounted, not copied.
    let queued_b1: i64 = sqlx::query_scalar(
        "SELECT q.queued FROM queues q JOIN devices d ON d.device_no = q.device_no \
         WHERE d.device_id = 'b1'",
    )
    .fetch_one(&inspect)
    .await
    .expect("queued");
    assert_eq!(queued_b1, 3);
    let bundle = store.fetch_bundles("bob").await.expect("bundle");
    assert_eq!(bundle.len(), 1);
    assert_eq!(bundle[0].one_time_key, Some(key("k1")));
    assert_eq!(bundle[0].fallback_key, Some(key("f")));
    let visible = store.visible_users("a1").await.expect("contacts");
    assert!(visible.iter().any(|(user, _)| user == "bob"), "{visible:?}");
    let queued: Vec<_> = store
        .pending("b1", 0, 10)
        .await
        .expect("pending")
        .into_iter()
        .map(|m| {
            (
                m.seq,
                m.message_id,
                m.ciphertext,
                m.from_device,
                m.from_user,
            )
        })
        .collect();
    let expected: Vec<_> = [(3, "m3", "c3"), (4, "m4", "c4"), (5, "m5", "c5")]
        .into_iter()
        .map(|(seq, id, c)| (seq, id.into(), c.into(), "a1".into(), "alice".into()))
        .collect();
    assert_eq!(queued, expected);
    assert_eq!(
        store.pending("a2", 0, 10).await.expect("a2")[0].ciphertext,
        "copy5"
    );
    let b1 = store.device("b1").await.expect("device").expect("b1");
    assert_eq!(b1.last_acked_seq, 2);
    assert_eq!(
        store
            .enqueue("a1", "m4", "bob", &[env("b1", "again")])
            .await
            .expect("retry"),
        Enqueued::Duplicate
    );
    let m6 = store
        .enqueue("a1", "m6", "bob", &[env("b1", "c6"), env("a2", "copy6")])
        .await
        .expect("m6");
    assert_eq!(m6.copies(), [("b1".to_owned(), 6), ("a2".to_owned(), 2)]);
    assert_eq!(
        store
            .ack("b1", &[acked("a1", "m3", 3), acked("a1", "m4", 4)])
            .await
            .expect("ack"),
        2
    );
    assert_eq!(
        store
            .device("b1")
            .await
            .expect("d")
            .expect("b1")
            .last_acked_seq,
        4
    );
    store
        .register_device(&reg("carol", "c1", "ik-c1", "sk-c1"), &Admission::default())
        .await
        .expect("c1");
    let to_carol = store
        .enqueue("a1", "m7", "carol", &[env("c1", "c7")])
        .await
        .expect("m7");
    assert_eq!(to_carol.copies(), [("c1".to_owned(), 1)]);
    let left: Vec<u64> = store
        .pending("b1", 0, 10)
        .await
        .expect("left")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(left, [5, 6]);
    // Removing a device still takes its queue with it, and its number is never issued again.
    let number_of = |device: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT device_no FROM devices WHERE device_id = ?")
            .bind(device)
            .fetch_one(&inspect)
    };
    let c1 = number_of("c1").await.expect("c1's number");
    store
        .register_device(&reg("carol", "c2", "ik-c2", "sk-c2"), &Admission::default())
        .await
        .expect_err("carol's second device needs a link token");
    assert!(store.remove_device("c1", "c1").await.expect("remove c1"));
    store
        .register_device(&reg("dave", "d1", "ik-d1", "sk-d1"), &Admission::default())
        .await
        .expect("d1");
    assert!(number_of("d1").await.expect("d1's number") > c1);
    assert!(store.remove_device("b1", "b1").await.expect("remove"));
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM messages WHERE recipient_no NOT IN \
         (SELECT device_no FROM devices)) + (SELECT COUNT(*) FROM queues) \
         - (SELECT COUNT(*) FROM devices)",
    )
    .fetch_one(&inspect)
    .await
    .expect("rows");
    assert_eq!(
        left, 0,
        "b1's messages gone with it, and a queue per device"
    );
    let dangling: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&inspect)
        .await
        .expect("foreign keys");
    assert!(dangling.is_empty());
}

/// Expiry in chunks: more old messages and idempotency records than one expiry transaction takes
/// (5,000) all go (more records than messages, as when acknowledged messages leave their records), the
/// young ones stay, an expired invite goes, and each queue's counter drops by exactly what it lost (a
/// queue that was full takes exactly that many new messages again).
#[tokio::test]
async fn expiry_takes_everything_old_in_chunks_and_keeps_the_counters() {
    let (dir, store) = two_users_with_queues_of(7_000).await;
    let path = dir.path().join("relay.db");
    let sends = (0..12_000).map(|i| {
        let store = store.clone();
        async move {
            let to = if i % 2 == 0 { "b1" } else { "a2" };
            let user = if i % 2 == 0 { "bob" } else { "alice" };
            store
                .enqueue("a1", &format!("old{i}"), user, &[env(to, "c")])
                .await
        }
    });
    for result in futures_util::future::join_all(sends).await {
        result.expect("stored");
    }
    // b1 acknowledges 4,000 of its 6,000: their idempotency records stay, so there are more old records
    // (12,000) than old messages (8,000), and expiry must go on until both are done.
    let acked: Vec<MessageRef> = store
        .pending("b1", 0, 4_000)
        .await
        .expect("pending")
        .into_iter()
        .map(|m| acked(&m.from_device, &m.message_id, m.seq))
        .collect();
    assert_eq!(store.ack("b1", &acked).await.expect("ack"), 4_000);
    store
        .create_invite("expired-invite", None, 1)
        .await
        .expect("invite");
    // Everything so far is two hours old; then one young message for each device.
    let db = side_pool(&path, false).await;
    for table in ["messages", "sent_messages"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET stored_at = stored_at - 7200"
        )))
        .execute(&db)
        .await
        .expect("backdate");
    }
    db.close().await;
    for (to, user) in [("b1", "bob"), ("a2", "alice")] {
        store
            .enqueue("a1", &format!("young-{to}"), user, &[env(to, "y")])
            .await
            .expect("young");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert_eq!(store.expire(now - 3600).await.expect("expire"), 8_000);
    let inspect = side_pool(&path, true).await;
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM sent_messages WHERE stored_at < ?), \
         (SELECT COUNT(*) FROM invites)",
    )
    .bind(now - 3600)
    .fetch_one(&inspect)
    .await
    .expect("count");
    assert_eq!(
        left,
        (0, 0),
        "old idempotency records and the expired invite are gone"
    );
    for to in ["b1", "a2"] {
        let left = store.pending(to, 0, 10).await.expect("pending");
        assert_eq!(left.len(), 1, "{to}");
        assert!(left[0].message_id.starts_with("young"));
    }
    // The old ids may be used again (their records expired), the young one not.
    assert!(matches!(
        store
            .enqueue("a1", "old0", "bob", &[env("b1", "again")])
            .await
            .expect("reuse"),
        Enqueued::Stored { .. }
    ));
    assert_eq!(
        store
            .enqueue("a1", "young-b1", "bob", &[env("b1", "again")])
            .await
            .expect("dup"),
        Enqueued::Duplicate
    );
    // b1 holds 2 messages of 7,000: 6,998 more fit, and not one beyond.
    let fill = (0..6_998).map(|i| {
        let store = store.clone();
        async move {
            store
                .enqueue("a1", &format!("fill{i}"), "bob", &[env("b1", "c")])
                .await
        }
    });
    for result in futures_util::future::join_all(fill).await {
        result.expect("room");
    }
    let full = store.enqueue("a1", "over", "bob", &[env("b1", "c")]).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { .. })),
        "{full:?}"
    );
}
