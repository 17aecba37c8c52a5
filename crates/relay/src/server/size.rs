//! The size of a `deliver` frame, checked when a message is sent: a stored copy whose `deliver` would
//! not fit in one channel frame could never be delivered, and it would block its device's queue (every
//! later message waits behind it).
//!
//! A `deliver` carries, besides the ciphertext, header fields the `send` did not: `from_user`,
//! `from_device`, `seq` and `stored_at`. The margin reserved for them is the header **at its largest**:
//! `seq` and `stored_at` at 20 characters (`u64::MAX`, `i64::MIN`), `from_user` at
//! [`RelayConfig::max_username`](super::RelayConfig::max_username) bytes that all need escaping in JSON
//! (2 bytes each), the sending device's id and the message id as sent (JSON-escaped).

use std::io;

use serde::Serialize;

use crate::protocol::Reply;
use crate::protocol::codec::encode_reply;

/// Counts the bytes written to it.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How many bytes `value` takes in JSON (as the codec encodes it), without building the text.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// The largest `deliver` header for a message `message_id` from `device`: the encoded frame with an
/// empty ciphertext, every other field at its largest (see the module).
pub(super) fn deliver_header(device: &str, message_id: &str, max_username: usize) -> usize {
    encode_reply(&Reply::Deliver {
        seq: u64::MAX,
        from_user: "\"".repeat(max_username),
        from_device: device.to_owned(),
        message_id: message_id.to_owned(),
        ciphertext: String::new(),
        stored_at: i64::MIN,
    })
    .len()
}

/// The size of the `deliver` of `ciphertext` under a header of `header` bytes (see [`deliver_header`]).
pub(super) fn deliver_size(header: usize, ciphertext: &str) -> usize {
    // The header counted the empty ciphertext's two quotes; `json_len` counts them again.
    header.saturating_add(json_len(ciphertext).saturating_sub(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The computed size is an upper bound of every real `deliver` of the message, and exact for the
    /// largest header.
    #[test]
    fn the_bound_covers_every_real_deliver() {
        let (device, message_id, ciphertext) = ("d".repeat(64), "m\"1", "ab\\c\"d");
        let header = deliver_header(&device, message_id, 64);
        let largest = encode_reply(&Reply::Deliver {
            seq: u64::MAX,
            from_user: "\\".repeat(64),
            from_device: device.clone(),
            message_id: message_id.into(),
            ciphertext: ciphertext.into(),
            stored_at: i64::MIN,
        });
        assert_eq!(deliver_size(header, ciphertext), largest.len());
        let real = encode_reply(&Reply::Deliver {
            seq: 7,
            from_user: "bob".into(),
            from_device: device,
            message_id: message_id.into(),
            ciphertext: ciphertext.into(),
            stored_at: 1_800_000_000,
        });
        assert!(real.len() < deliver_size(header, ciphertext));
    }
}
