//! The response put together batch by batch as TEE_K's keystreams arrive: plaintext = ciphertext XOR
//! keystream, record by record, beside the consolidated ciphertext and keystream the bundle carries.

use std::collections::{HashMap, VecDeque};

use super::ClientError;

/// The response put together record by record as keystreams arrive.
#[derive(Default)]
pub(super) struct Assembled {
    /// Plaintext: ciphertext XOR keystream.
    pub(super) response: Vec<u8>,
    pub(super) ciphertext: Vec<u8>,
    pub(super) keystream: zeroize::Zeroizing<Vec<u8>>,
}

impl Assembled {
    /// Takes every kept record before seq `end`, in order: one with a keystream is content (appended), one
    /// without (an alert, a post-handshake message) is not.
    pub(super) fn settle(
        &mut self,
        kept: &mut VecDeque<(u64, Vec<u8>)>,
        streams: &mut HashMap<u64, Vec<u8>>,
        end: u64,
    ) -> Result<(), ClientError> {
        while let Some((seq, ciphertext)) = kept
            .front()
            .is_some_and(|(seq, _)| *seq < end)
            .then(|| kept.pop_front())
            .flatten()
        {
            let Some(keystream) = streams.remove(&seq) else {
                continue;
            };
            let content = ciphertext.get(..keystream.len()).ok_or_else(|| {
                ClientError::Protocol("a keystream longer than its record".into())
            })?;
            let at = self.response.len();
            self.response.extend_from_slice(content);
            // A word at a time (byte by byte was ~2 ms a megabyte).
            xor_in_place(&mut self.response[at..], &keystream);
            self.ciphertext.extend_from_slice(content);
            self.keystream.extend_from_slice(&keystream);
            drop(zeroize::Zeroizing::new(keystream));
        }
        Ok(())
    }
}

/// `data ^= key`, over the shorter of the two; in 8-byte words, which the compiler vectorizes.
fn xor_in_place(data: &mut [u8], key: &[u8]) {
    let n = data.len().min(key.len());
    let (data, key) = (&mut data[..n], &key[..n]);
    let mut words = data.chunks_exact_mut(8);
    let mut key_words = key.chunks_exact(8);
    for (d, k) in (&mut words).zip(&mut key_words) {
        let (Ok(dw), Ok(kw)) = (<[u8; 8]>::try_from(&*d), <[u8; 8]>::try_from(k)) else {
            continue;
        };
        d.copy_from_slice(&(u64::from_ne_bytes(dw) ^ u64::from_ne_bytes(kw)).to_ne_bytes());
    }
    for (d, k) in words.into_remainder().iter_mut().zip(key_words.remainder()) {
        *d ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::xor_in_place;

    #[test]
    fn xor_in_place_matches_bytewise_at_every_length_and_offset() {
        let key: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..40 {
            for offset in 0..9 {
                let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(11)).collect();
                let mut got = data.clone();
                xor_in_place(&mut got, &key[offset..]);
                let want: Vec<u8> = data
                    .iter()
                    .zip(&key[offset..])
                    .map(|(d, k)| d ^ k)
                    .collect();
                assert_eq!(got, want, "len {len} offset {offset}");
            }
        }
        // A shorter key leaves the rest as it was.
        let mut data = vec![0xffu8; 20];
        xor_in_place(&mut data, &[0x0f; 11]);
        assert_eq!(&data[..11], &[0xf0; 11]);
        assert_eq!(&data[11..], &[0xff; 9]);
    }
}
