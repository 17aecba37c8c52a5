//! A device's life from the command line.
//!
//! * `tessera chat register` run again on a state file left by a registration that was cut short — the
//!   process killed after the relay took the device but before its prekeys were published, or before the
//!   relay saw the device at all. The states are made as `register` leaves them at those points (through
//!   the same library calls, in the same order), then the binary finishes them, and a message sent to
//!   the finished device is decrypted by its `listen`.
//! * `tessera chat remove-device`: a lost phone retired from the laptop gets nothing more, and what was
//!   queued for it is gone; another account's device cannot be removed; a device can retire itself.

use std::path::Path;

use tessera_channel::Identity;
use tessera_relay::e2e::OlmDevice;
use tessera_relay::state_file::{Profile, StateFile, Unlock};
use zeroize::Zeroizing;

mod support {
    pub mod chat;
}
use support::chat::*;

/// What `register` has on disk when it is cut short: the state saved before the relay was asked. With
/// `invite`, the relay also took the device (the registration call went through; the prekeys did not).
/// Returns the device id.
fn cut_short(relay: &Relay, state: &Path, user: &str, invite: Option<&str>) -> String {
    let unlock = Unlock::Passphrase(Zeroizing::new(PASSPHRASE.as_bytes().to_vec()));
    let file = StateFile::create(state, unlock).expect("create state");
    let profile = Profile {
        server_url: relay.url.clone(),
        server_key: relay.key.clone(),
        username: user.to_owned(),
        identity: Identity::generate(),
    };
    let olm = OlmDevice::new();
    file.save(&profile, &olm).expect("save state");
    if let Some(invite) = invite {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let mut client = relay_client(relay, &profile.identity).await;
            client
                .register_with(user, &olm.identity_key(), &olm.signing_key(), Some(invite))
                .await
                .expect("the relay takes the device");
            client.close().await;
        });
    }
    profile.identity.public_key().to_string()
}

/// `user`'s next message, decrypted by `tessera chat listen` on `state`.
fn listen_one(state: &Path) -> serde_json::Value {
    let out = ok(chat(
        state,
        &["listen", "--json", "--count", "1", "--timeout", "60"],
    ));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn register_again_finishes_a_registration_cut_short() {
    let dir = tempfile_dir("register");
    let data = dir.join("data");
    let relay = serve(&data);
    let bob = dir.join("bob.state");
    register(&relay, &bob, "bob", &invite(&data));

    // Cut short after the relay took alice's device (and her invite): no token is needed to finish, and
    // the device is the one the state holds.
    let alice = dir.join("alice.state");
    let alice_device = cut_short(&relay, &alice, "alice", Some(&invite(&data)));
    let finished = ok(chat(&alice, &register_args(&relay, "alice")));
    assert!(
        finished.contains("(an earlier registration, finished)"),
        "{finished}"
    );
    assert_eq!(device_of(&finished), alice_device);
    // Her prekeys are on the relay now: bob starts a session and alice decrypts it.
    ok(chat(&bob, &["send", "alice", "hello after the crash"]));
    let message = listen_one(&alice);
    assert_eq!(message["from"], "bob");
    assert_eq!(message["text"], "hello after the crash");
    // Run once more by mistake: the same device, nothing broken.
    let again = ok(chat(&alice, &register_args(&relay, "alice")));
    assert_eq!(device_of(&again), alice_device);
    ok(chat(&bob, &["send", "alice", "still here"]));
    assert_eq!(listen_one(&alice)["text"], "still here");

    // Cut short before the relay saw carol's device: finishing it is a registration, so the invite-only
    // relay wants an invite; without one the state is kept for the next try.
    let carol = dir.join("carol.state");
    let carol_device = cut_short(&relay, &carol, "carol", None);
    let refused = chat(&carol, &register_args(&relay, "carol"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is kept"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(carol.exists());
    let token = invite(&data);
    let mut args = register_args(&relay, "carol");
    args.extend(["--invite", &token]);
    let finished = ok(chat(&carol, &args));
    assert_eq!(device_of(&finished), carol_device);
    ok(chat(&bob, &["send", "carol", "welcome"]));
    assert_eq!(listen_one(&carol)["text"], "welcome");

    // A state file of another user is never taken over by `register`.
    let before = std::fs::read(&alice).expect("alice's state");
    let other = chat(&alice, &register_args(&relay, "mallory"));
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("already holds a device of alice"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert_eq!(std::fs::read(&alice).expect("alice's state"), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_removed_device_gets_nothing_more() {
    let dir = tempfile_dir("remove");
    let data = dir.join("data");
    let relay = serve(&data);
    let (alice, phone, bob) = (
        dir.join("alice.state"),
        dir.join("phone.state"),
        dir.join("bob.state"),
    );
    let alice_device = device_of(&register(&relay, &alice, "alice", &invite(&data)));
    let link = ok(chat(&alice, &["link"])).trim().to_owned();
    let phone_device = device_of(&register(&relay, &phone, "alice", &link));
    let bob_device = device_of(&register(&relay, &bob, "bob", &invite(&data)));
    // Something is waiting for the phone when it is removed.
    ok(chat(&bob, &["send", "alice", "to both"]));

    // Nobody removes another account's device.
    let refused = chat(&bob, &["remove-device", &alice_device]);
    assert!(!refused.status.success());
    assert!(ok(chat(&alice, &["devices"])).contains(&alice_device));

    // Alice retires her lost phone from her laptop.
    let removed = ok(chat(&alice, &["remove-device", &phone_device]));
    assert_eq!(
        removed.trim(),
        format!("removed device {phone_device} of alice")
    );
    let devices = ok(chat(&alice, &["devices"]));
    assert!(devices.contains(&alice_device), "{devices}");
    assert!(!devices.contains(&phone_device), "{devices}");
    ok(chat(&bob, &["send", "alice", "only to the laptop"]));
    let texts: Vec<String> = ok(chat(
        &alice,
        &["listen", "--json", "--count", "2", "--timeout", "30"],
    ))
    .lines()
    .map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        v["text"].as_str().expect("text").to_owned()
    })
    .collect();
    assert_eq!(texts, ["to both", "only to the laptop"]);
    // Neither the copy queued for the phone nor any later one is left at the relay for it.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        use tessera_relay::store::{SqliteStore, Store};
        let store = SqliteStore::open(data.join("relay.db")).await.expect("db");
        let left = store.pending(&phone_device, 0, 10).await.expect("pending");
        assert!(left.is_empty(), "{left:?}");
    });
    // The phone's state is of no use any more.
    let unknown = chat(&phone, &["devices"]);
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("NotRegistered"), "{said}");

    // Bob retires the device he is on: told so, and its state no longer works either.
    let own = chat(&bob, &["remove-device", &bob_device]);
    let stderr = String::from_utf8_lossy(&own.stderr).into_owned();
    ok(own);
    assert!(stderr.contains("that was this device"), "{stderr}");
    assert!(!chat(&bob, &["users"]).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
