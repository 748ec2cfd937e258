//! Escaping is injective and round-trips; key parsing never panics and
//! accepts exactly the keys `build` produces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use okome_core::keys::*;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let e = escape(data);
    assert!(e.iter().all(|&b| is_safe(b) || b == b'%'));
    if !data.is_empty() {
        assert_eq!(unescape(&e).as_deref(), Some(data));
    }
    // Two components split at the first 0xFF: the key parses back to its kind.
    if let Some(i) = data.iter().position(|&b| b == 0xff) {
        let (a, b) = (&data[..i], &data[i + 1..]);
        if let Ok(k) = build(Kind::Rag, &[a, b]) {
            assert_eq!(parse(&k), Ok(Kind::Rag));
            assert!(!k.ends_with(b":lock") || b.ends_with(b"lock"));
        }
    }
});
