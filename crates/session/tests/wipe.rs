//! `wipe_vec` clears a vector's spare capacity as well as its bytes (what a truncation left behind).

#[test]
fn wipe_vec_clears_the_spare_capacity_too() {
    let mut bytes = vec![7u8; 64];
    bytes.truncate(16);
    let capacity = bytes.capacity();
    tessera_session::wipe_vec(&mut bytes);
    assert!(bytes.is_empty());
    assert_eq!(bytes.capacity(), capacity);
    // SAFETY: u8 has no invalid values, and wipe_vec wrote every byte of the capacity.
    unsafe { bytes.set_len(capacity) };
    assert!(bytes.iter().all(|b| *b == 0), "{bytes:?}");
}

#[test]
fn wipe_clears_every_byte() {
    let mut bytes = [0xA5u8; 1000];
    tessera_session::wipe(&mut bytes[3..997]);
    assert_eq!(&bytes[..3], &[0xA5; 3]);
    assert!(bytes[3..997].iter().all(|b| *b == 0));
    assert_eq!(&bytes[997..], &[0xA5; 3]);
}
