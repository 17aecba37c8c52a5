//! Store rules found by the relay audit (2026-12): a retry is a duplicate before anything else, and a
//! delivery batch has a byte budget.

use tessera_relay::protocol::Envelope;
use tessera_relay::store::{Admission, Enqueued, Registration, SqliteStore, Store, StoreLimits};

fn reg<'a>(username: &'a str, device: &'a str) -> Registration<'a> {
    Registration {
        username,
        device,
        identity_key: "ik",
        signing_key: "sk",
    }
}

fn env(device: &str) -> Vec<Envelope> {
    vec![Envelope {
        device: device.into(),
        ciphertext: "c".into(),
    }]
}

/// A retry of a stored message id is `Duplicate` even when the recipient's queue is now full or the
/// recipient device is gone (a refusal would say the id is not spent, and a re-send under a new id
/// would deliver the message twice).
#[tokio::test]
async fn a_retry_is_a_duplicate_before_queue_and_recipient_checks() {
    let dir = tempfile::tempdir().expect("dir");
    let limits = StoreLimits {
        max_queued_per_device: 1,
    };
    let store = SqliteStore::open_with(dir.path().join("relay.db"), limits)
        .await
        .expect("open");
    for (user, device) in [("alice", "a1"), ("bob", "b1")] {
        store
            .register_device(&reg(user, device), &Admission::default())
            .await
            .expect("register");
    }
    let first = store.enqueue("a1", "m1", "bob", &env("b1")).await;
    assert!(matches!(first, Ok(Enqueued::Stored { .. })), "{first:?}");
    // b1's queue is full now: a new message is refused, the retry is a duplicate.
    let other = store.enqueue("a1", "m2", "bob", &env("b1")).await;
    assert!(other.is_err(), "{other:?}");
    let retry = store.enqueue("a1", "m1", "bob", &env("b1")).await;
    assert!(matches!(retry, Ok(Enqueued::Duplicate)), "{retry:?}");
    // The recipient device is removed: the retry is still a duplicate.
    assert!(store.remove_device("b1", "b1").await.expect("remove"));
    let retry = store.enqueue("a1", "m1", "bob", &env("b1")).await;
    assert!(matches!(retry, Ok(Enqueued::Duplicate)), "{retry:?}");
}

/// A delivery batch stops before its ciphertext passes the byte budget, holds at least one message
/// whatever the budget, and says whether more may follow.
#[tokio::test]
async fn a_delivery_batch_has_a_byte_budget() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    for (user, device) in [("alice", "a1"), ("bob", "b1")] {
        store
            .register_device(&reg(user, device), &Admission::default())
            .await
            .expect("register");
    }
    for i in 0..5 {
        let envelopes = vec![Envelope {
            device: "b1".into(),
            ciphertext: "x".repeat(1000),
        }];
        store
            .enqueue("a1", &format!("m{i}"), "bob", &envelopes)
            .await
            .expect("enqueue");
    }
    let seqs = |batch: &[tessera_relay::store::StoredMessage]| {
        batch.iter().map(|m| m.seq).collect::<Vec<_>>()
    };
    let (batch, more) = store
        .pending_within("b1", 0, 100, 2500)
        .await
        .expect("read");
    assert_eq!((seqs(&batch), more), (vec![1, 2], true));
    let (batch, more) = store.pending_within("b1", 2, 100, 10).await.expect("read");
    assert_eq!((seqs(&batch), more), (vec![3], true));
    let (batch, more) = store
        .pending_within("b1", 3, 100, 1 << 20)
        .await
        .expect("read");
    assert_eq!((seqs(&batch), more), (vec![4, 5], false));
    let (batch, more) = store
        .pending_within("b1", 0, 3, 1 << 20)
        .await
        .expect("read");
    assert_eq!((seqs(&batch), more), (vec![1, 2, 3], true));
    let (batch, more) = store
        .pending_within("b1", 5, 100, 1 << 20)
        .await
        .expect("read");
    assert_eq!((seqs(&batch), more), (vec![], false));
}

/// An account has at most `MAX_DEVICES_PER_ACCOUNT` devices: one more is refused, even with a valid
/// link token (which stays unused), and a removal makes room again.
#[tokio::test]
async fn devices_per_account_are_capped() {
    use tessera_relay::invite::token_hash;
    use tessera_relay::store::{MAX_DEVICES_PER_ACCOUNT, StoreError};
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    let link = |i: usize| format!("link-{i}");
    let register = |i: usize| {
        let store = &store;
        async move {
            let device = format!("d{i}");
            let hash = token_hash(&link(i));
            let admission = Admission {
                invite_only: false,
                token_hash: Some(&hash),
            };
            store
                .register_device(&reg("alice", &device), &admission)
                .await
        }
    };
    let mint = |i: usize| {
        let store = &store;
        async move {
            store
                .create_invite(&token_hash(&link(i)), Some("alice"), i64::MAX / 2)
                .await
                .expect("token");
        }
    };
    for i in 0..MAX_DEVICES_PER_ACCOUNT {
        mint(i).await;
        register(i).await.expect("under the cap");
    }
    mint(MAX_DEVICES_PER_ACCOUNT).await;
    let refused = register(MAX_DEVICES_PER_ACCOUNT).await;
    assert!(
        matches!(refused, Err(StoreError::TooManyDevices { limit, .. }) if limit == MAX_DEVICES_PER_ACCOUNT),
        "{refused:?}"
    );
    assert_eq!(
        store.list_devices("alice").await.expect("list").len(),
        MAX_DEVICES_PER_ACCOUNT
    );
    assert!(store.remove_device("d0", "d1").await.expect("remove"));
    register(MAX_DEVICES_PER_ACCOUNT)
        .await
        .expect("room again, and the token was not spent");
}

/// An account keeps at most `MAX_LINK_TOKENS_PER_ACCOUNT` link tokens: minting one more replaces the
/// oldest, and the newest ones still work.
#[tokio::test]
async fn link_tokens_per_account_are_capped_oldest_first() {
    use tessera_relay::invite::token_hash;
    use tessera_relay::store::{MAX_LINK_TOKENS_PER_ACCOUNT, StoreError};
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    store
        .register_device(&reg("alice", "a1"), &Admission::default())
        .await
        .expect("a1");
    let link = |i: usize| format!("link-{i}");
    for i in 0..=MAX_LINK_TOKENS_PER_ACCOUNT {
        store
            .create_invite(&token_hash(&link(i)), Some("alice"), i64::MAX / 2)
            .await
            .expect("token");
    }
    let register = |i: usize, device: &'static str| {
        let store = &store;
        async move {
            let hash = token_hash(&link(i));
            let admission = Admission {
                invite_only: false,
                token_hash: Some(&hash),
            };
            store
                .register_device(&reg("alice", device), &admission)
                .await
        }
    };
    let oldest = register(0, "a2").await;
    assert!(
        matches!(oldest, Err(StoreError::InviteRequired { .. })),
        "{oldest:?}"
    );
    register(1, "a2")
        .await
        .expect("the oldest kept token works");
    register(MAX_LINK_TOKENS_PER_ACCOUNT, "a3")
        .await
        .expect("the newest works");
}
