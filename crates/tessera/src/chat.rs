//! `tessera chat`: a device of a relay account, driven from the command line (people and scripts).
//!
//! All state — relay URL and pinned relay key, account, the device's channel private key, Olm account,
//! sessions, peer pins and the dedup window — is one file (`--state`, default `tessera-chat.state`),
//! sealed at rest (`tessera_relay::state_file`) under a passphrase (`TESSERA_CHAT_PASSPHRASE`, or
//! `--passphrase-file`) stretched with Argon2id, or under a 32-byte key file (`--key-file`: 32 raw bytes
//! or 64 hex digits). Every command that changes the state writes it back atomically.
//!
//! `listen` persists the state after printing a message and only then acknowledges it: a crash in
//! between redelivers the message, and the saved dedup window drops it, unless the crash came between
//! printing and saving (then it is printed once more: at-least-once to stdout in that window only).
//! `listen --output FILE` appends to a file instead, exactly once even then ([`crate::chat_output`]).

mod input;
mod lock;
mod register;
pub(crate) mod secret_file;
mod text;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use tessera_channel::{ChannelConfig, Connector, PublicKey};
use tessera_relay::chat::{ChatDevice, ChatError, ChatEvent, Undecryptable};
use tessera_relay::client::{ClientError, RelayClient};
use tessera_relay::e2e::{E2eError, OlmDevice, fingerprint};
use tessera_relay::state_file::{Profile, StateFile};
use tessera_session::{Registry, RegistryConfig};

use input::{invite_token, send_text, unlock};
use lock::StateLock;
use text::escape_controls;

/// A chat device.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The sealed state file of this device.
    #[arg(
        long,
        global = true,
        env = "TESSERA_CHAT_STATE",
        default_value = "tessera-chat.state"
    )]
    state: PathBuf,
    /// Seal the state under this key file (32 bytes, or 64 hex digits) instead of a passphrase. Must be
    /// private (mode 0600), at most 4 KiB.
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Read the passphrase from this file (first line) instead of TESSERA_CHAT_PASSPHRASE. Must be
    /// private (mode 0600), at most 4 KiB.
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ChatCommand,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Create this device's state and register it with a relay.
    Register {
        /// The relay's URL, e.g. ws://127.0.0.1:7400/.
        #[arg(long)]
        server: String,
        /// The relay's channel key (64 hex digits, as `tessera relay serve` prints it); pinned.
        #[arg(long, value_name = "KEY")]
        server_key: PublicKey,
        /// The account name.
        #[arg(long)]
        user: String,
        /// An invite token (invite-only relay) or a device-link token (`tessera chat link` on one of
        /// the account's devices) for a second device. On the command line it is visible to other local
        /// users (ps): prefer --invite-file or TESSERA_CHAT_INVITE.
        #[arg(long, value_name = "TOKEN", conflicts_with = "invite_file")]
        invite: Option<String>,
        /// Read the invite or device-link token from this file (private, mode 0600; surrounding
        /// whitespace ignored). Without --invite or --invite-file, TESSERA_CHAT_INVITE is used if set.
        #[arg(long, value_name = "FILE")]
        invite_file: Option<PathBuf>,
        /// One-time prekeys to publish.
        #[arg(long, default_value_t = 50)]
        prekeys: usize,
    },
    /// Send a text to a user (end to end encrypted to each of their devices).
    Send {
        /// The recipient.
        user: String,
        /// The text. `-` or none: read it from standard input (up to 1 MiB, one final newline dropped),
        /// which keeps it out of the process list (ps) that other local users can read.
        text: Option<String>,
    },
    /// Print incoming messages (decrypted), each once: `USER: TEXT` lines with control characters in the
    /// text escaped (`\n`, `\r`, `\t`, `\u{1b}`, ...), so a sender cannot forge lines or send terminal
    /// escapes; or JSON with --json.
    Listen {
        /// One JSON object per line: {"from","from_device","message_id","text"}.
        #[arg(long)]
        json: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds (an error if --count was not reached).
        #[arg(long)]
        timeout: Option<u64>,
        /// Append the messages to FILE as JSON lines (as --json prints them) instead of printing them:
        /// each exactly once, even if this process is killed at any point.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// The users visible to this account, with presence.
    Users,
    /// This device's fingerprint, or each device of USER with its pin status.
    Fingerprint {
        /// Whose devices (default: this device).
        user: Option<String>,
    },
    /// The devices of this account (or of USER).
    Devices {
        /// Whose devices (default: this account).
        user: Option<String>,
    },
    /// Mint a single-use token that lets one new device join this account.
    Link,
    /// Remove a device from this account — a lost or retired one (`devices` lists them): the relay
    /// forgets its keys and deletes what was queued for it, and nothing sent from now on is encrypted
    /// to it. Naming this device itself retires it: its state can no longer be used.
    RemoveDevice {
        /// The device id (64 hex digits, as `devices` shows it).
        #[arg(value_name = "DEVICE")]
        device: PublicKey,
    },
    /// Accept the identity key USER's DEVICE has now (after checking its fingerprint with USER over
    /// another channel): replaces the pin and drops the sessions made with the old key.
    Trust {
        /// The user.
        user: String,
        /// The device id (64 hex digits, as `fingerprint USER` shows it).
        device: String,
    },
}

/// Runs `tessera chat ...`.
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    // Read before the lock is taken: standard input may be a person typing.
    let text = match &args.command {
        ChatCommand::Send { text, .. } => Some(send_text(text.as_deref())?),
        _ => None,
    };
    let unlock = unlock(&args)?;
    let _lock = StateLock::take(&args.state)?;
    if let ChatCommand::Register {
        server,
        server_key,
        user,
        invite,
        invite_file,
        prekeys,
    } = &args.command
    {
        let invite = invite_token(invite.as_deref(), invite_file.as_deref())?;
        let request = register::Request {
            server,
            server_key: *server_key,
            user,
            invite: invite.as_deref().map(|token| token.as_str()),
            prekeys: *prekeys,
        };
        return register::run(&args.state, unlock, &request).await;
    }
    let (file, state) = StateFile::open(&args.state, unlock)?;
    let profile = state.profile;
    let mut device = connect(&profile, state.olm).await?;
    let outcome = command(
        &args.command,
        text.as_deref().map(|text| text.as_str()),
        &file,
        &profile,
        &mut device,
    )
    .await;
    // Whatever happened, the Olm state (sessions, pins, dedup) is written back.
    let olm = device.close().await;
    file.save(&profile, &olm)?;
    outcome
}

async fn open_channel(profile: &Profile) -> anyhow::Result<RelayClient> {
    let server_key: PublicKey = profile
        .server_key
        .parse()
        .map_err(|_| anyhow::anyhow!("the state holds a malformed relay key"))?;
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("chat")),
        ChannelConfig::default(),
    );
    let channel = connector
        .connect(&profile.server_url, server_key, &profile.identity)
        .await
        .with_context(|| format!("connecting to {}", profile.server_url))?;
    Ok(RelayClient::new(channel))
}

async fn connect(profile: &Profile, olm: OlmDevice) -> anyhow::Result<ChatDevice> {
    let client = open_channel(profile).await?;
    Ok(ChatDevice::resume(
        client,
        &profile.username,
        profile.identity.public_key().to_string(),
        olm,
    ))
}

/// The hard warning for a peer whose identity key changed: on stderr, and the command fails.
fn identity_changed(error: &E2eError) -> Option<anyhow::Error> {
    if let E2eError::IdentityChanged {
        device,
        pinned,
        presented,
    } = error
    {
        eprintln!(
            "WARNING: THE IDENTITY KEY OF DEVICE {device} HAS CHANGED.\n\
             pinned:   {}\nnow:      {}\n\
             Someone may be impersonating this device (or it was reinstalled). Nothing was sent to it or accepted from it.\n\
             Compare fingerprints with its owner over another channel.",
            fingerprint(pinned),
            fingerprint(presented)
        );
        return Some(anyhow::anyhow!(
            "identity key of {device} changed; refusing"
        ));
    }
    None
}

fn chat_error(error: ChatError) -> anyhow::Error {
    if let ChatError::E2e(e2e) = &error
        && let Some(warning) = identity_changed(e2e)
    {
        return warning;
    }
    error.into()
}

/// Runs a command other than `register` on an open device; `text` is `send`'s text, already read.
async fn command(
    command: &ChatCommand,
    text: Option<&str>,
    file: &StateFile,
    profile: &Profile,
    device: &mut ChatDevice,
) -> anyhow::Result<()> {
    match command {
        ChatCommand::Register { .. } => unreachable_register(),
        ChatCommand::Send { user, .. } => {
            let text = text.unwrap_or_default();
            new_device_notice(device, user).await?;
            let id = device.send_text(user, text).await.map_err(chat_error)?;
            println!("sent {id}");
            Ok(())
        }
        ChatCommand::Listen {
            json,
            count,
            timeout,
            output,
        } => {
            let mut output = match output {
                Some(path) => Some(crate::chat_output::OutputFile::open(path)?),
                None => None,
            };
            // SIGINT (Ctrl-C) or SIGTERM (`docker stop`, systemd) ends listening normally: the state is
            // saved (in `run`) and the lock released. A message printed but not yet saved is not
            // acknowledged: it comes again and the dedup window decides.
            let signals = tessera_session::shutdown::listen();
            let listening = async {
                tokio::select! {
                    result = listen(file, profile, device, *json, *count, output.as_mut()) => result,
                    () = signals.recv() => Ok(()),
                }
            };
            match timeout {
                Some(seconds) => {
                    match tokio::time::timeout(Duration::from_secs(*seconds), listening).await {
                        Ok(result) => result,
                        Err(_) if count.is_none() => Ok(()),
                        Err(_) => bail!("timed out before {} message(s)", count.unwrap_or(0)),
                    }
                }
                None => listening.await,
            }
        }
        ChatCommand::Users => {
            for user in device.client().list_users().await? {
                let presence = if user.online { "online" } else { "offline" };
                println!("{} ({presence})", escape_controls(&user.username));
            }
            Ok(())
        }
        ChatCommand::Fingerprint { user: None } => {
            println!("{} device {}", profile.username, device.device());
            println!("fingerprint: {}", device.olm().fingerprint());
            Ok(())
        }
        ChatCommand::Fingerprint { user: Some(user) } => {
            let devices = device.client().list_devices(user).await?;
            let mut changed = None;
            for listed in &devices {
                let shown = fingerprint(&listed.identity_key);
                let status = match device.olm().pinned_fingerprint(&listed.device) {
                    Some(pinned) if pinned == shown => "pinned, matches".to_owned(),
                    Some(pinned) => {
                        changed = identity_changed(&E2eError::IdentityChanged {
                            device: listed.device.clone(),
                            pinned: pinned.replace(' ', ""),
                            presented: listed.identity_key.clone(),
                        });
                        "CHANGED".to_owned()
                    }
                    None => "not pinned yet (pinned at the first message)".to_owned(),
                };
                println!(
                    "{user} device {}\n  fingerprint: {shown}\n  {status}",
                    listed.device
                );
            }
            changed.map_or(Ok(()), Err)
        }
        ChatCommand::Devices { user } => {
            let user = user.as_deref().unwrap_or(&profile.username);
            for listed in device.client().list_devices(user).await? {
                let this = if listed.device == device.device() {
                    " (this device)"
                } else {
                    ""
                };
                println!(
                    "{} {}{this}",
                    listed.device,
                    fingerprint(&listed.identity_key)
                );
            }
            Ok(())
        }
        ChatCommand::Trust {
            user,
            device: target,
        } => {
            let listed = device.client().list_devices(user).await?;
            let Some(found) = listed.iter().find(|d| &d.device == target) else {
                bail!("{user} has no device {target}");
            };
            device.trust(&found.device, &found.identity_key)?;
            println!(
                "{user} device {target} now pinned to\n  fingerprint: {}",
                fingerprint(&found.identity_key)
            );
            Ok(())
        }
        ChatCommand::RemoveDevice { device: target } => {
            let target = target.to_string();
            device.client().remove_device(Some(target.clone())).await?;
            println!("removed device {target} of {}", profile.username);
            if target == device.device() {
                eprintln!(
                    "that was this device: the relay no longer knows it, so {} can be deleted \
                     (register a new device to carry on)",
                    file.path().display()
                );
            }
            Ok(())
        }
        ChatCommand::Link => {
            let (token, expires_at) = device.client().link_device().await?;
            println!("{}", token.as_str());
            eprintln!(
                "give it to the new device: tessera chat register --user {} --invite-file FILE ... (the token in a mode 0600 file, or in TESSERA_CHAT_INVITE; valid until {expires_at}, Unix time)",
                profile.username
            );
            Ok(())
        }
    }
}

/// A notice on stderr when `user` has a device this device never wrote to or heard from, beside devices
/// it knows: a new phone, or a device someone (the relay, say) added. The message is still sent to it
/// (trust on first use); the notice says how to check.
async fn new_device_notice(device: &mut ChatDevice, user: &str) -> anyhow::Result<()> {
    let listed = match device.client().list_devices(user).await {
        Ok(listed) => listed,
        // An unknown user: send_text reports it.
        Err(_) => return Ok(()),
    };
    let own = device.device().to_owned();
    let (known, new): (Vec<_>, Vec<_>) = listed
        .iter()
        .filter(|d| d.device != own)
        .partition(|d| device.olm().pinned_fingerprint(&d.device).is_some());
    if known.is_empty() {
        return Ok(());
    }
    for listed in new {
        eprintln!(
            "notice: {user} has a device you have not seen before: {}
  fingerprint: {}
               check it with {user} over another channel (tessera chat fingerprint {user})",
            listed.device,
            fingerprint(&listed.identity_key)
        );
    }
    Ok(())
}

fn unreachable_register() -> anyhow::Result<()> {
    bail!("register creates a new state; it is handled before the state is opened")
}

/// Reports a delivery that could not be decrypted (the library acknowledged it, so that it does not block
/// the messages behind it, unless it came under a changed identity key: that one waits for `trust`): the hard warning for a changed identity key, then one line,
/// JSON on stdout with `json` (`{"undecryptable":true,...}`), else on stderr.
fn report_undecryptable(report: &Undecryptable, json: bool) -> anyhow::Result<()> {
    let _ = identity_changed(&report.error);
    if json {
        let line = serde_json::json!({
            "undecryptable": true,
            "from": report.from_user,
            "from_device": report.from_device,
            "message_id": report.message_id,
            "error": report.error.to_string(),
            "kept": report.kept,
        });
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    } else {
        let fate = if report.kept {
            "kept at the relay until you trust the new key (tessera chat trust)"
        } else {
            "dropped"
        };
        eprintln!(
            "WARNING: a message from {} (device {}, id {}) cannot be decrypted and was {fate}: {}",
            escape_controls(&report.from_user),
            escape_controls(&report.from_device),
            escape_controls(&report.message_id),
            escape_controls(&report.error.to_string())
        );
    }
    Ok(())
}

async fn listen(
    file: &StateFile,
    profile: &Profile,
    device: &mut ChatDevice,
    json: bool,
    count: Option<u64>,
    mut output: Option<&mut crate::chat_output::OutputFile>,
) -> anyhow::Result<()> {
    // Others start sessions with this device from its one-time keys: keep some on the relay.
    let published = device.replenish(50).await?;
    if published > 0 {
        file.save(profile, device.olm())?;
        tracing::info!(published, "published one-time keys");
    }
    let mut received = 0u64;
    let mut stdout = std::io::stdout();
    while count.is_none_or(|n| received < n) {
        let event = match device.next_event(Some(Duration::from_secs(30))).await {
            // The relay pushed more than the client buffers: the rest is still queued there, and a new
            // connection delivers it from the first unacknowledged.
            Err(ChatError::Client(ClientError::DeliveriesDropped { dropped })) => {
                tracing::info!(dropped, "delivery buffer full; reconnecting");
                device.reconnect(open_channel(profile).await?);
                continue;
            }
            other => other.map_err(chat_error)?,
        };
        let message = match event {
            ChatEvent::Message(message) => message,
            ChatEvent::Undecryptable(report) => {
                report_undecryptable(&report, json && output.is_none())?;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&message.body);
        let line = if json || output.is_some() {
            serde_json::json!({
                "from": message.from_user,
                "from_device": message.from_device,
                "message_id": message.message_id,
                "text": text,
            })
            .to_string()
        } else {
            // One line per message whatever the sender put in it: no forged lines, no terminal escapes.
            format!(
                "{}: {}",
                escape_controls(&message.from_user),
                escape_controls(&text)
            )
        };
        match output.as_deref_mut() {
            // Appended (durably) unless a kill after an earlier append left it there already.
            Some(out) => {
                if !out.holds(&message.from_device, &message.message_id) {
                    out.append(&line, &message.from_device, &message.message_id)?;
                }
            }
            None => {
                writeln!(stdout, "{line}")?;
                stdout.flush()?;
            }
        }
        // Persist (the message is now in the dedup window), then acknowledge.
        file.save(profile, device.olm())?;
        device.ack(&message).await?;
        received += 1;
    }
    Ok(())
}
