//! The wiping resolver speaks snow's bytes exactly, and its wrappers wipe what they held.

use super::*;
use crate::frame::Suite;
use snow::Builder;
use snow::resolvers::{BoxedCryptoResolver, DefaultResolver, FallbackResolver, RingResolver};

/// The resolvers a side may run on: ours (either implementation) and snow's two.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Ours(CipherImpl),
    SnowDefault,
    SnowRing,
}

const SIDES: [Side; 4] = [
    Side::Ours(CipherImpl::Compact),
    Side::Ours(CipherImpl::Fast),
    Side::SnowDefault,
    Side::SnowRing,
];

impl Side {
    fn resolver(self) -> BoxedCryptoResolver {
        match self {
            Side::Ours(imp) => Box::new(WipingResolver::new(imp)),
            Side::SnowDefault => Box::new(DefaultResolver),
            Side::SnowRing => Box::new(FallbackResolver::new(
                Box::new(RingResolver),
                Box::new(DefaultResolver),
            )),
        }
    }
}

/// What one XX handshake produced: the three messages, each side's handshake hash and raw split, and
/// the static key each side learned.
#[derive(Debug, PartialEq)]
struct Transcript {
    messages: Vec<Vec<u8>>,
    hashes: (Vec<u8>, Vec<u8>),
    splits: ([u8; 32], [u8; 32], [u8; 32], [u8; 32]),
    remote_statics: (Vec<u8>, Vec<u8>),
}

/// An XX handshake in `suite`, `initiator` and `responder` on the given resolvers, with the given static
/// and (for a byte-for-byte comparison) ephemeral keys, payloads in every message.
fn run(suite: Suite, initiator: Side, responder: Side, keys: &[[u8; 32]; 4]) -> Transcript {
    let build = |side: Side, s: &[u8; 32], e: &[u8; 32], init: bool| {
        let params = suite.noise_params().parse().expect("params");
        let b = Builder::with_resolver(params, side.resolver())
            .local_private_key(s)
            .and_then(|b| b.prologue(suite.prologue()))
            .expect("builder")
            .fixed_ephemeral_key_for_testing_only(e);
        if init {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .expect("build")
    };
    let mut i = build(initiator, &keys[0], &keys[1], true);
    let mut r = build(responder, &keys[2], &keys[3], false);
    let (mut buf, mut payload) = ([0u8; 1024], [0u8; 1024]);
    let mut messages = Vec::new();
    for (step, sent) in [b"hello".as_slice(), b"server nonce", b"auth token"]
        .into_iter()
        .enumerate()
    {
        let (writer, reader) = if step % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let n = writer.write_message(sent, &mut buf).expect("write");
        let m = reader.read_message(&buf[..n], &mut payload).expect("read");
        assert_eq!(&payload[..m], sent, "{suite:?} {initiator:?}→{responder:?}");
        messages.push(buf[..n].to_vec());
    }
    assert!(i.is_handshake_finished() && r.is_handshake_finished());
    let ((i1, i2), (r1, r2)) = (i.dangerously_get_raw_split(), r.dangerously_get_raw_split());
    Transcript {
        messages,
        hashes: (
            i.get_handshake_hash().to_vec(),
            r.get_handshake_hash().to_vec(),
        ),
        splits: (i1, i2, r1, r2),
        remote_statics: (
            i.get_remote_static().expect("rs").to_vec(),
            r.get_remote_static().expect("rs").to_vec(),
        ),
    }
}

fn random_keys() -> [[u8; 32]; 4] {
    let mut keys = [[0u8; 32]; 4];
    for key in &mut keys {
        rand::fill(key);
    }
    keys
}

/// Every pairing of our resolver and snow's, both roles, every suite: the same keys give the same
/// messages byte for byte, the same handshake hash and the same transport keys as snow alone.
#[test]
fn our_resolver_speaks_snows_bytes() {
    for suite in Suite::ALL {
        let keys = random_keys();
        let reference = run(suite, Side::SnowDefault, Side::SnowDefault, &keys);
        let (i1, i2, r1, r2) = reference.splits;
        assert_eq!((i1, i2), (r1, r2));
        assert_eq!(reference.hashes.0, reference.hashes.1);
        for initiator in SIDES {
            for responder in SIDES {
                let got = run(suite, initiator, responder, &keys);
                assert_eq!(got, reference, "{suite:?} {initiator:?}→{responder:?}");
            }
        }
    }
}

/// With fresh ephemeral keys (our RNG, not fixed ones) a handshake against snow still agrees on both
/// transport keys.
#[test]
fn our_resolver_completes_with_random_ephemerals() {
    for suite in Suite::ALL {
        for imp in [CipherImpl::Compact, CipherImpl::Fast] {
            for ours_initiates in [true, false] {
                let params: snow::params::NoiseParams = suite.noise_params().parse().unwrap();
                let keys = random_keys();
                let build = |resolver: BoxedCryptoResolver, key: &[u8; 32], init: bool| {
                    let b = Builder::with_resolver(params.clone(), resolver)
                        .local_private_key(key)
                        .unwrap();
                    if init {
                        b.build_initiator().unwrap()
                    } else {
                        b.build_responder().unwrap()
                    }
                };
                let ours = build(Side::Ours(imp).resolver(), &keys[0], ours_initiates);
                let theirs = build(Box::new(DefaultResolver), &keys[1], !ours_initiates);
                let (mut i, mut r) = if ours_initiates {
                    (ours, theirs)
                } else {
                    (theirs, ours)
                };
                let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
                let n = i.write_message(&[], &mut a).unwrap();
                r.read_message(&a[..n], &mut b).unwrap();
                let n = r.write_message(b"x", &mut a).unwrap();
                i.read_message(&a[..n], &mut b).unwrap();
                let n = i.write_message(b"y", &mut a).unwrap();
                r.read_message(&a[..n], &mut b).unwrap();
                assert_eq!(
                    i.dangerously_get_raw_split(),
                    r.dangerously_get_raw_split(),
                    "{suite:?} {imp:?} ours_initiates={ours_initiates}"
                );
            }
        }
    }
}

/// `T` wipes itself when dropped.
fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

#[test]
fn the_dh_private_key_is_zeroized() {
    let mut dh = X25519::default();
    dh.set(&[7; 32]);
    assert_ne!(dh.privkey(), &[0; 32]);
    let public = dh.pubkey().to_vec();
    zeroized_on_drop(&dh.private);
    zeroize::Zeroize::zeroize(&mut dh.private);
    assert_eq!(dh.privkey(), &[0; 32]);
    assert_eq!(public, dh.pubkey(), "the public key is not a secret");
}

/// What `cipher` seals a fixed message to; checks that it opens again, and not once tampered with.
fn sealed(cipher: &dyn Cipher) -> Vec<u8> {
    let mut out = [0u8; 9 + TAG_LEN];
    let n = cipher.encrypt(3, b"ad", b"a message", &mut out);
    let mut opened = [0u8; 9];
    assert_eq!(cipher.decrypt(3, b"ad", &out[..n], &mut opened), Ok(9));
    assert_eq!(&opened, b"a message");
    for (nonce, ad, at) in [
        (4, b"ad", 0),
        (3, b"AD", 0),
        (3, b"ad", 2),
        (3, b"ad", n - 1),
    ] {
        let mut tampered = out;
        tampered[at] ^= u8::from(at != 0);
        assert!(
            cipher
                .decrypt(nonce, ad, &tampered[..n], &mut opened)
                .is_err()
        );
    }
    assert!(
        cipher
            .decrypt(3, b"ad", &out[..TAG_LEN - 1], &mut opened)
            .is_err()
    );
    out[..n].to_vec()
}

#[test]
fn a_ring_cipher_is_overwritten_in_place_by_the_zero_keys_schedule() {
    for aead in [Aead::ChaChaPoly, Aead::AesGcm] {
        let zero = RingCipher::new(aead).unwrap();
        let mut cipher = RingCipher::new(aead).unwrap();
        cipher.set(&[0x42; KEY_LEN]);
        assert_ne!(sealed(&cipher), sealed(&zero));
        let schedule: *const LessSafeKey = &cipher.key;
        cipher.wipe();
        assert!(std::ptr::eq(schedule, &cipher.key));
        assert_eq!(sealed(&cipher), sealed(&zero));
    }
}

#[test]
fn a_rustcrypto_cipher_key_is_zeroized() {
    for aead in [Aead::ChaChaPoly, Aead::AesGcm] {
        let zero = RustCryptoCipher {
            aead,
            key: Zeroizing::new([0; KEY_LEN]),
        };
        let mut cipher = RustCryptoCipher {
            aead,
            key: Zeroizing::new([0; KEY_LEN]),
        };
        cipher.set(&[0x42; KEY_LEN]);
        assert_ne!(sealed(&cipher), sealed(&zero));
        zeroized_on_drop(&cipher.key);
        zeroize::Zeroize::zeroize(&mut cipher.key);
        assert_eq!(sealed(&cipher), sealed(&zero));
    }
}

/// A hash's state, wiped, is a fresh one: its digest is the empty message's.
fn wiped_hash_is_fresh<E: Sha256Engine>() {
    let empty = {
        let mut h = Sha256::<E>::default();
        let mut out = [0u8; 32];
        h.result(&mut out);
        out
    };
    let mut h = Sha256::<E>::default();
    h.input(&[0x42; 100]);
    h.wipe();
    let mut out = [0u8; 32];
    h.result(&mut out);
    assert_eq!(out, empty);
}

#[test]
fn a_hash_state_is_overwritten_by_a_fresh_one() {
    wiped_hash_is_fresh::<sha2::Sha256>();
    wiped_hash_is_fresh::<ring::digest::Context>();
}
