//! What `tessera chat` reads besides its flags: the secret that unlocks the state, `send`'s text and
//! `register`'s token. Each can come from somewhere other than argv (which other local users can read
//! in `ps`): files that must be private, standard input, or the environment.

use std::path::Path;

use anyhow::{Context, bail};
use tessera_relay::e2e::state::StateKey;
use tessera_relay::state_file::Unlock;
use zeroize::Zeroizing;

use super::ChatArgs;
use super::secret_file::{MAX_SECRET_FILE_LEN, read_private};

/// How the state is sealed: a key file (`--key-file`), a passphrase file (`--passphrase-file`) or
/// TESSERA_CHAT_PASSPHRASE. Both files must be private (mode 0600 or stricter) and at most a few KiB;
/// what is read from them is zeroized, and errors never quote it.
pub fn unlock(args: &ChatArgs) -> anyhow::Result<Unlock> {
    if let Some(path) = &args.key_file {
        let bytes = read_private(path, MAX_SECRET_FILE_LEN, "key file")?;
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            key.copy_from_slice(&bytes);
        } else {
            let hex_ok = std::str::from_utf8(&bytes)
                .is_ok_and(|text| hex::decode_to_slice(text.trim(), &mut key[..]).is_ok());
            if !hex_ok {
                bail!(
                    "{}: a key file holds 32 bytes or 64 hex digits",
                    path.display()
                );
            }
        }
        return Ok(Unlock::Key(StateKey::from_bytes(*key)));
    }
    let passphrase = match &args.passphrase_file {
        Some(path) => {
            let bytes = read_private(path, MAX_SECRET_FILE_LEN, "passphrase file")?;
            // The first line, without its line ending.
            let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Zeroizing::new(line.to_vec())
        }
        None => match std::env::var("TESSERA_CHAT_PASSPHRASE") {
            Ok(value) => Zeroizing::new(value.into_bytes()),
            Err(_) => bail!(
                "the state is sealed: set TESSERA_CHAT_PASSPHRASE, or give --passphrase-file or --key-file"
            ),
        },
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Unlock::Passphrase(passphrase))
}

/// The most text `send` reads from standard input.
const MAX_STDIN_TEXT: u64 = 1 << 20;

/// The text of `send`: the argument, or standard input when it is `-` or absent (so that it need not be
/// in argv, which other local users can read), without one final newline.
pub fn send_text(text: Option<&str>) -> anyhow::Result<Zeroizing<String>> {
    use std::io::Read;
    if let Some(text) = text.filter(|text| *text != "-") {
        return Ok(Zeroizing::new(text.to_owned()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_TEXT + 1)
        .read_to_end(&mut bytes)
        .context("reading the text from standard input")?;
    if bytes.len() as u64 > MAX_STDIN_TEXT {
        bail!("the text on standard input is larger than {MAX_STDIN_TEXT} bytes");
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!("the text on standard input is not UTF-8");
    };
    let text = text
        .strip_suffix('\n')
        .map(|text| text.strip_suffix('\r').unwrap_or(text))
        .unwrap_or(text);
    if text.is_empty() {
        bail!("no text to send: give TEXT, or write it to standard input");
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// The registration token: `--invite`, else `--invite-file` (a private file), else TESSERA_CHAT_INVITE.
pub fn invite_token(
    invite: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(token) = invite {
        return Ok(Some(Zeroizing::new(token.to_owned())));
    }
    if let Some(path) = file {
        let bytes = read_private(path, MAX_SECRET_FILE_LEN, "invite file")?;
        let token = std::str::from_utf8(&bytes)
            .map(str::trim)
            .unwrap_or_default();
        if token.is_empty() {
            bail!("the invite file {} holds no token", path.display());
        }
        return Ok(Some(Zeroizing::new(token.to_owned())));
    }
    Ok(std::env::var("TESSERA_CHAT_INVITE")
        .ok()
        .map(|token| Zeroizing::new(token.trim().to_owned()))
        .filter(|token| !token.is_empty()))
}
