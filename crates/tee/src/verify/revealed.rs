//! The response's revealed bytes: the hidden ranges checked and cut out of a response (whole or in
//! pieces, hashed or copied), and put back as `*` by the verifier. The prover, TEE_K, TEE_T and the
//! verifier all cut with these functions, so what each signs or checks is the same bytes.

use super::VerifyError;
use crate::proto::ResponseRange;

/// Checks the hidden response ranges (in bounds of `len`, non-empty, sorted, disjoint; touching is
/// allowed); returns how many bytes they hide.
pub(super) fn hidden_len(hidden: &[ResponseRange], len: usize) -> Result<usize, VerifyError> {
    let mut total = 0;
    let mut end_of_previous = 0;
    for range in hidden {
        let (start, end) = range_bounds(range, len)?;
        if start < end_of_previous {
            return Err(VerifyError::Ranges(
                "response ranges overlap or are unsorted",
            ));
        }
        end_of_previous = end;
        total += end - start;
    }
    Ok(total)
}

fn range_bounds(range: &ResponseRange, len: usize) -> Result<(usize, usize), VerifyError> {
    let start = usize::try_from(range.start).ok();
    let end = start.zip(usize::try_from(range.length).ok());
    end.and_then(|(start, length)| Some((start, start.checked_add(length)?)))
        .filter(|&(start, end)| end <= len && end > start)
        .ok_or(VerifyError::Ranges("response range out of bounds or empty"))
}

/// The bytes of `full` outside the `hidden` ranges, in order. This is what a bundle carries of the
/// response ciphertext and keystream, and T_OUTPUT and K_OUTPUT sign their SHA-256: the keystream of
/// hidden bytes never leaves TEE_K and the client, and the signers hash only what is revealed.
pub fn revealed_bytes(full: &[u8], hidden: &[ResponseRange]) -> Result<Vec<u8>, VerifyError> {
    let hidden_len = hidden_len(hidden, full.len())?;
    let mut out = Vec::with_capacity(full.len() - hidden_len);
    let mut at = 0;
    for range in hidden {
        let (start, end) = range_bounds(range, full.len())?;
        out.extend_from_slice(&full[at..start]);
        at = end;
    }
    out.extend_from_slice(&full[at..]);
    Ok(out)
}

/// [`revealed_bytes`] of a response held in pieces (records as they came), hashed as it goes: the
/// SHA-256 T_OUTPUT signs, without a consolidated copy.
pub fn revealed_sha256<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
    hidden: &[ResponseRange],
) -> Result<[u8; 32], VerifyError> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for_each_revealed(pieces, hidden, |bytes| hasher.update(bytes))?;
    Ok(hasher.finalize().into())
}

/// [`revealed_bytes`] of a response held in pieces, without a consolidated copy of the whole.
pub fn revealed_bytes_of<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
    hidden: &[ResponseRange],
) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::new();
    for_each_revealed(pieces, hidden, |bytes| out.extend_from_slice(bytes))?;
    Ok(out)
}

/// Calls `f` with every revealed stretch of a response held in `pieces`, in order, after checking the
/// hidden ranges against the whole.
fn for_each_revealed<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]> + Clone,
    hidden: &[ResponseRange],
    mut f: impl FnMut(&[u8]),
) -> Result<(), VerifyError> {
    let whole = pieces.clone().into_iter().map(<[u8]>::len).sum();
    hidden_len(hidden, whole)?;
    // The revealed spans: the gaps between hidden ranges, and the tail.
    let mut spans = Vec::with_capacity(hidden.len() + 1);
    let mut at = 0;
    for range in hidden {
        let (start, end) = range_bounds(range, whole)?;
        spans.push((at, start));
        at = end;
    }
    spans.push((at, whole));
    let mut spans = spans.into_iter().filter(|(s, e)| s < e).peekable();
    let mut offset = 0;
    for piece in pieces {
        let piece_end = offset + piece.len();
        while let Some(&(start, end)) = spans.peek() {
            if start >= piece_end {
                break;
            }
            let (from, to) = (start.max(offset), end.min(piece_end));
            f(&piece[from - offset..to - offset]);
            if end > piece_end {
                break;
            }
            spans.next();
        }
        offset = piece_end;
    }
    Ok(())
}

/// The response (`whole` bytes) as a verifier sees it: the revealed bytes decrypted (revealed ciphertext
/// XOR revealed keystream, both with the hidden ranges cut out), hidden ones `*`.
pub(super) fn reveal_response(
    hidden: &[ResponseRange],
    whole: usize,
    ciphertext: &[u8],
    keystream: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    let short = || VerifyError::Records("the revealed bytes are fewer than the ranges leave");
    let mut response = Vec::with_capacity(whole);
    let (mut ciphertext, mut keystream) = (ciphertext, keystream);
    let mut at = 0;
    let hidden = hidden.iter().map(|r| range_bounds(r, whole));
    // Each hidden range, then an empty one at the end for the revealed tail.
    for bounds in hidden.chain([Ok((whole, whole))]) {
        let (start, end) = bounds?;
        let shown = start.checked_sub(at).ok_or(VerifyError::Ranges(
            "response ranges overlap or are unsorted",
        ))?;
        let (c, c_rest) = ciphertext.split_at_checked(shown).ok_or_else(short)?;
        let (k, k_rest) = keystream.split_at_checked(shown).ok_or_else(short)?;
        response.extend(c.iter().zip(k).map(|(c, k)| c ^ k));
        response.resize(end, b'*');
        (ciphertext, keystream, at) = (c_rest, k_rest, end);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What the prover cuts out (`revealed_bytes`) and what the verifier puts back (`reveal_response`)
        /// fit: every revealed byte decrypts, every hidden one is `*`, for any valid hidden ranges.
        #[test]
        fn the_revealed_keystream_decrypts_exactly_the_revealed_bytes(
            plain in proptest::collection::vec(b'a'..=b'z', 0..200),
            cuts in proptest::collection::vec((0usize..200, 1usize..20), 0..6),
        ) {
            let keystream: Vec<u8> = (0..plain.len()).map(|i| (i as u8).wrapping_mul(37) ^ 0x5a).collect();
            let ciphertext: Vec<u8> = plain.iter().zip(&keystream).map(|(p, k)| p ^ k).collect();
            // Sorted, disjoint, non-empty ranges in bounds.
            let mut hidden = Vec::new();
            let mut at = 0;
            let mut starts: Vec<(usize, usize)> = cuts;
            starts.sort_unstable();
            for (start, len) in starts {
                let (start, end) = (start.max(at), (start.max(at) + len).min(plain.len()));
                if start < end {
                    hidden.push(ResponseRange { start: start as u64, length: (end - start) as u64 });
                    at = end; // touching ranges are valid too
                }
            }
            let revealed = revealed_bytes(&keystream, &hidden).unwrap();
            let revealed_ciphertext = revealed_bytes(&ciphertext, &hidden).unwrap();
            let shown =
                reveal_response(&hidden, plain.len(), &revealed_ciphertext, &revealed).unwrap();
            let mut expected = plain.clone();
            for r in &hidden {
                expected[r.start as usize..(r.start + r.length) as usize].fill(b'*');
            }
            prop_assert_eq!(shown, expected);
            let hidden_total: u64 = hidden.iter().map(|r| r.length).sum();
            prop_assert_eq!(revealed.len() as u64 + hidden_total, plain.len() as u64);
            // TEE_T's digest over the response in pieces is the digest of the revealed bytes.
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut rest = &ciphertext[..];
            for (i, cut) in cuts_again(plain.len()).into_iter().enumerate() {
                let (piece, tail) = rest.split_at(cut.min(rest.len()));
                if i % 3 != 2 { pieces.push(piece); } else { pieces.push(&[]); pieces.push(piece); }
                rest = tail;
            }
            pieces.push(rest);
            prop_assert_eq!(
                revealed_sha256(pieces.iter().copied(), &hidden).unwrap(),
                crate::signing::sha256(&revealed_ciphertext)
            );
            prop_assert_eq!(
                revealed_bytes_of(pieces.iter().copied(), &hidden).unwrap(),
                revealed_ciphertext
            );
        }
    }

    /// Piece lengths that split a response of `len` bytes several ways (1-byte pieces included).
    fn cuts_again(len: usize) -> Vec<usize> {
        [1, 7, 1, 64, 3]
            .into_iter()
            .cycle()
            .take(len / 10 + 2)
            .collect()
    }

    #[test]
    fn bad_hidden_ranges_are_errors_not_panics() {
        let full = [1u8; 10];
        let range = |start, length| ResponseRange { start, length };
        for hidden in [
            vec![range(8, 5)],
            vec![range(3, 0)],
            vec![range(u64::MAX, 2)],
            vec![range(4, 2), range(5, 1)],
            vec![range(6, 1), range(2, 1)],
        ] {
            assert!(revealed_bytes(&full, &hidden).is_err(), "{hidden:?}");
            assert!(
                revealed_sha256([&full[..4], &full[4..]], &hidden).is_err(),
                "{hidden:?}"
            );
        }
    }
}
