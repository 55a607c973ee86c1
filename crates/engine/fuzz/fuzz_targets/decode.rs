//! Journal payload decoding: never panics on any bytes, and whatever decodes is
//! canonical (re-encodes to the same bytes) and round-trips.

#![no_main]

use kura_engine::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = decode(data) {
        let mut bytes = Vec::new();
        encode(&entry, &mut bytes);
        assert_eq!(bytes, data, "decoded payload is not canonical");
        assert_eq!(decode(&bytes), Ok(entry), "round trip changed the entry");
    }
});
