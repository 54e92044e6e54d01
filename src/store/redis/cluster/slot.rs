//! The hash slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the key, or of
//! its hash tag (the part between the first `{` and the next `}`, if not empty), mod 16384.
//! redis-rs does not export its own.

pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"tollgate:c:{foo}"), 12182);
        assert_eq!(key_slot(b"x{}foo"), key_slot(b"x{}foo"));
        assert_eq!(key_slot(b"{}foo"), crc16(b"{}foo") % 16384);
    }
}
