//! The response put together batch by batch as TEE_K's keystreams arrive: plaintext = ciphertext XOR
//! keystream, record by record, beside the records' ciphertext (slices of what was read, not copied), of
//! which the bundle carries the revealed bytes. The keystream is not kept: it is plaintext XOR
//! ciphertext, and the bundle needs only its revealed bytes.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use tessera_session::SecretBytes;

use super::ClientError;

/// The response put together record by record as keystreams arrive.
#[derive(Default)]
pub(super) struct Assembled {
    /// Plaintext: ciphertext XOR keystream.
    pub(super) response: Vec<u8>,
    /// The content's ciphertext, record by record.
    pub(super) ciphertext: Vec<Bytes>,
}

impl Assembled {
    /// Takes every kept record before seq `end`, in order: one with a keystream is content (appended), one
    /// without (an alert, a post-handshake message) is not. `read` is the response's ciphertext bytes read
    /// so far: room for that many is made at once, instead of growing (and page-faulting) step by step.
    pub(super) fn settle(
        &mut self,
        kept: &mut VecDeque<(u64, Bytes)>,
        streams: &mut HashMap<u64, SecretBytes>,
        end: u64,
        read: usize,
    ) -> Result<(), ClientError> {
        self.response
            .reserve(read.saturating_sub(self.response.len()));
        while let Some((seq, ciphertext)) = kept
            .front()
            .is_some_and(|(seq, _)| *seq < end)
            .then(|| kept.pop_front())
            .flatten()
        {
            let Some(keystream) = streams.remove(&seq) else {
                continue;
            };
            let keystream = keystream.expose_secret();
            if keystream.len() > ciphertext.len() {
                return Err(ClientError::Protocol(
                    "a keystream longer than its record".into(),
                ));
            }
            let content = ciphertext.slice(..keystream.len());
            xor_into(&mut self.response, &content, keystream);
            self.ciphertext.push(content);
        }
        Ok(())
    }
}

/// Appends `a XOR b` (over the shorter of the two) in one pass, which the compiler vectorizes.
fn xor_into(out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    out.extend(a.iter().zip(b).map(|(x, y)| x ^ y));
}

#[cfg(test)]
mod tests {
    use super::{Assembled, xor_into};
    use bytes::Bytes;
    use std::collections::{HashMap, VecDeque};
    use tessera_session::SecretBytes;

    #[test]
    fn xor_into_matches_bytewise_at_every_length_and_offset() {
        let key: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..40 {
            for offset in 0..9 {
                let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(11)).collect();
                let mut got = vec![7u8; 3];
                xor_into(&mut got, &data, &key[offset..]);
                let want: Vec<u8> = [7u8; 3]
                    .into_iter()
                    .chain(data.iter().zip(&key[offset..]).map(|(d, k)| d ^ k))
                    .collect();
                assert_eq!(got, want, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn settle_takes_records_in_order_and_skips_those_without_a_keystream() {
        let mut assembled = Assembled::default();
        let mut kept: VecDeque<(u64, Bytes)> = (0..4u64)
            .map(|seq| (seq, Bytes::from(vec![seq as u8 + 1; 5])))
            .collect();
        // Record 1 has no keystream (e.g. a ticket); record 2's keystream covers 4 of its 5 bytes (the
        // TLS 1.3 inner type is not content).
        let mut streams: HashMap<u64, SecretBytes> = HashMap::from([
            (0, vec![0xf0; 5].into()),
            (2, vec![0x0f; 4].into()),
            (3, vec![0; 5].into()),
        ]);
        assembled.settle(&mut kept, &mut streams, 3, 20).unwrap();
        assert_eq!(kept.len(), 1, "record 3 waits for its batch");
        assert_eq!(
            assembled.response,
            [[0xf1; 5].as_slice(), &[0x0c; 4]].concat()
        );
        assert_eq!(
            assembled.ciphertext.concat(),
            [[1u8; 5].as_slice(), &[3; 4]].concat()
        );
        assembled
            .settle(&mut kept, &mut streams, u64::MAX, 20)
            .unwrap();
        assert!(kept.is_empty() && streams.is_empty());
        assert_eq!(assembled.response.len(), 14);
        // A keystream longer than its record is refused.
        let mut kept = VecDeque::from([(9, Bytes::from_static(b"ab"))]);
        let mut streams = HashMap::from([(9, vec![0; 3].into())]);
        assert!(assembled.settle(&mut kept, &mut streams, 10, 0).is_err());
    }
}
