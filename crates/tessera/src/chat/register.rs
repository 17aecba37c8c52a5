//! `tessera chat register`: creates a device's state and registers it with a relay — or, when the state
//! file is already there for the same user and relay, finishes a registration that was cut short.
//!
//! The state is written before the relay is asked (identity and Olm account), and again once the prekeys
//! exist and before they are published. So whenever the relay may have taken the device — which uses up
//! the username and the invite — its keys are on disk, and running `register` again with the same
//! `--state` carries on from there: the relay updates a device it already has (no token needed) and admits
//! one it lacks under its usual rules, then the prekeys are topped up.

use std::path::Path;

use anyhow::{Context, bail};
use tessera_channel::{Identity, PublicKey};
use tessera_relay::client::{ClientError, RelayClient};
use tessera_relay::e2e::OlmDevice;
use tessera_relay::protocol::PreKey;
use tessera_relay::state_file::{Profile, StateFile, Unlock};

use super::open_channel;

/// What `chat register` was given.
pub(super) struct Request<'a> {
    /// The relay's URL.
    pub server: &'a str,
    /// The relay's channel key, pinned.
    pub server_key: PublicKey,
    /// The account name.
    pub user: &'a str,
    /// An invite or device-link token.
    pub invite: Option<&'a str>,
    /// How many one-time prekeys to publish (1 to 100).
    pub prekeys: usize,
}

/// Runs `chat register`: a new device, or the rest of the registration of the one `state` holds.
pub(super) async fn run(state: &Path, unlock: Unlock, request: &Request<'_>) -> anyhow::Result<()> {
    if state.exists() {
        return resume(state, unlock, request).await;
    }
    let Request {
        server,
        server_key,
        user,
        invite,
        prekeys,
    } = *request;
    let file = StateFile::create(state, unlock)?;
    let profile = Profile {
        server_url: server.to_owned(),
        server_key: server_key.to_string(),
        username: user.to_owned(),
        identity: Identity::generate(),
    };
    let mut client = open_channel(&profile).await?;
    let mut olm = OlmDevice::new();
    // Saved before the relay sees the device, so that a crash (or a failed save) after the relay took
    // it never loses the device's keys.
    file.save(&profile, &olm)?;
    if let Err(error) = client
        .register_with(user, &olm.identity_key(), &olm.signing_key(), invite)
        .await
    {
        client.close().await;
        if matches!(error, ClientError::Refused { .. }) {
            // The relay answered no: nothing is registered, so there is nothing to keep.
            let _ = std::fs::remove_file(state);
            return Err(error.into());
        }
        return Err(anyhow::Error::from(error).context(format!(
            "registration did not complete; {} is kept, as the relay may have registered this device: \
             run the same `tessera chat register` again to finish it",
            state.display()
        )));
    }
    let (one_time, fallback) = olm.prekeys(prekeys.clamp(1, 100));
    publish(client, &file, &profile, &olm, one_time, fallback).await?;
    report(user, &profile, &olm, "");
    Ok(())
}

/// The state file exists: finishes its device's registration if it is for `user` at this relay.
async fn resume(state: &Path, unlock: Unlock, request: &Request<'_>) -> anyhow::Result<()> {
    let Request {
        server,
        server_key,
        user,
        invite,
        prekeys,
    } = *request;
    let (file, saved) = StateFile::open(state, unlock)?;
    let profile = saved.profile;
    if profile.username != user
        || profile.server_url != server
        || profile.server_key != server_key.to_string()
    {
        bail!(
            "{} already holds a device of {} at {} (relay key {}); give another --state to register a \
             new device",
            state.display(),
            profile.username,
            profile.server_url,
            profile.server_key
        );
    }
    let mut olm = saved.olm;
    let mut client = open_channel(&profile).await?;
    let registered = client
        .register_with(user, &olm.identity_key(), &olm.signing_key(), invite)
        .await;
    let left = match registered {
        Ok(()) => client.count_prekeys().await,
        Err(error) => Err(error),
    };
    let left = match left {
        Ok(left) => usize::try_from(left).unwrap_or(usize::MAX),
        Err(error) => {
            client.close().await;
            // Kept in every case: the keys in it may be the ones the relay holds.
            return Err(anyhow::Error::from(error).context(format!(
                "finishing the registration kept in {} did not complete; it is kept",
                state.display()
            )));
        }
    };
    // Whether the fallback key reached the relay is unknown: a new one is published with the top-up.
    let (one_time, fallback) = olm.prekeys(prekeys.clamp(1, 100).saturating_sub(left));
    publish(client, &file, &profile, &olm, one_time, fallback).await?;
    report(user, &profile, &olm, " (an earlier registration, finished)");
    Ok(())
}

/// Saves the state with the prekeys' private halves, then publishes their public halves.
async fn publish(
    mut client: RelayClient,
    file: &StateFile,
    profile: &Profile,
    olm: &OlmDevice,
    one_time: Vec<PreKey>,
    fallback: Option<PreKey>,
) -> anyhow::Result<()> {
    file.save(profile, olm)?;
    let published = client.publish_prekeys(one_time, fallback).await;
    client.close().await;
    published.context(
        "registered, but publishing the one-time keys failed (`tessera chat listen`, or `register` \
         again, publishes more)",
    )?;
    Ok(())
}

fn report(user: &str, profile: &Profile, olm: &OlmDevice, note: &str) {
    println!(
        "registered {user}: device {}{note}",
        profile.identity.public_key()
    );
    println!("fingerprint: {}", olm.fingerprint());
}
