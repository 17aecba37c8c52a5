//! Split AEAD throughput per suite at 1 KiB and 16 KiB records, beside the one-shot aes-gcm /
//! chacha20poly1305 seal of the same bytes in the same run (the ceiling).
//!
//! `seal/split` = one request record through the split path: TEE_K derives nonce and AAD, encrypts in place
//! and derives the tag secrets; TEE_T computes the tag from the tag secrets; the record is framed.
//! `open/split` = one response record through the split path: TEE_K derives AAD, keystream (materialized, as
//! it is sent to the client) and tag secrets from the header; TEE_T verifies the tag; the keystream is XORed;
//! the content type is parsed.
//! `*/one_shot` = the AEAD crate's in-place seal / open of the same bytes with the same nonce and AAD.
//!
//! Run: `cargo bench -p tessera-tee --bench split_aead -- --warm-up-time 1 --measurement-time 3`

use aes_gcm::aead::{AeadInPlace, KeyInit};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tessera_tee::record::ContentType;
use tessera_tee::{
    AeadAlgorithm, CipherSuite, TeeKReader, TeeKWriter, open_via_split, seal_via_split,
};

const SIZES: [usize; 2] = [1024, 16 * 1024];

enum OneShot {
    Aes128(Box<aes_gcm::Aes128Gcm>),
    Aes256(Box<aes_gcm::Aes256Gcm>),
    ChaCha(Box<chacha20poly1305::ChaCha20Poly1305>),
}

impl OneShot {
    fn new(alg: AeadAlgorithm, key: &[u8]) -> Self {
        match alg {
            AeadAlgorithm::Aes128Gcm => {
                OneShot::Aes128(Box::new(aes_gcm::Aes128Gcm::new_from_slice(key).unwrap()))
            }
            AeadAlgorithm::Aes256Gcm => {
                OneShot::Aes256(Box::new(aes_gcm::Aes256Gcm::new_from_slice(key).unwrap()))
            }
            AeadAlgorithm::ChaCha20Poly1305 => OneShot::ChaCha(Box::new(
                chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).unwrap(),
            )),
        }
    }

    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let tag = match self {
            OneShot::Aes128(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            OneShot::Aes256(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            OneShot::ChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        tag.unwrap().into()
    }

    fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) {
        match self {
            OneShot::Aes128(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            OneShot::Aes256(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            OneShot::ChaCha(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
        }
        .unwrap()
    }
}

fn bench(c: &mut Criterion) {
    for suite in CipherSuite::ALL {
        let mut group = c.benchmark_group(format!("split_aead/{}", suite.iana_name()));
        let key = vec![0x42u8; suite.aead().key_len()];
        let iv = [7u8; 12];
        for size in SIZES {
            let plaintext = vec![0xA5u8; size];
            group.throughput(Throughput::Bytes(size as u64));
            let mut writer = TeeKWriter::new(suite, &key, &iv, 1).unwrap();
            group.bench_with_input(BenchmarkId::new("seal/split", size), &plaintext, |b, pt| {
                b.iter(|| {
                    black_box(
                        seal_via_split(&mut writer, ContentType::ApplicationData, black_box(pt))
                            .unwrap(),
                    )
                })
            });
            let one_shot = OneShot::new(suite.aead(), &key);
            let aad = [0u8; 13];
            let mut buf = plaintext.clone();
            group.bench_with_input(BenchmarkId::new("seal/one_shot", size), &size, |b, _| {
                b.iter(|| black_box(one_shot.seal(&iv, black_box(&aad), &mut buf)))
            });

            // One genuine record (sequence number 1), opened again and again by a reader reset to seq 1.
            let record = seal_via_split(
                &mut TeeKWriter::new(suite, &key, &iv, 1).unwrap(),
                ContentType::ApplicationData,
                &plaintext,
            )
            .unwrap();
            // Building the reader (key expansion) is setup, outside the measured time.
            group.bench_with_input(
                BenchmarkId::new("open/split", size),
                &record,
                |b, record| {
                    b.iter_batched(
                        || TeeKReader::new(suite, &key, &iv, 1).unwrap(),
                        |mut reader| {
                            black_box(open_via_split(&mut reader, black_box(record)).unwrap())
                        },
                        BatchSize::SmallInput,
                    )
                },
            );
            let mut sealed = plaintext.clone();
            let tag = one_shot.seal(&iv, &aad, &mut sealed);
            // The ciphertext copy is setup here, so the ceiling is the bare in-place open.
            group.bench_with_input(BenchmarkId::new("open/one_shot", size), &size, |b, _| {
                b.iter_batched(
                    || sealed.clone(),
                    |mut buf| {
                        one_shot.open(&iv, black_box(&aad), &mut buf, &tag);
                        buf
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
