//! The format's one bit order (spec §5.3, §5.5, §5.11): bits are packed most-significant first,
//! each byte filled from its top bit down, and the last byte padded with zero bits. Packed
//! symbol streams, Huffman codes, code-length tables and binary sign rows all use it.

/// Writes codes most-significant bit first, packing bytes from their top bit down.
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            bits: 0,
        }
    }

    /// Append the low `len` bits of `code` (at most 32).
    #[inline]
    pub fn put(&mut self, code: u32, len: u8) {
        self.acc = (self.acc << len) | code as u64;
        self.bits += len as u32;
        while self.bits >= 8 {
            self.bits -= 8;
            self.out.push((self.acc >> self.bits) as u8);
        }
    }

    /// Pad to the next byte boundary with zero bits (each binary row starts on a byte).
    pub fn align(&mut self) {
        if self.bits > 0 {
            self.put(0, (8 - self.bits) as u8);
        }
    }

    /// Pad the last byte with zero bits.
    pub fn finish(mut self) -> Vec<u8> {
        self.align();
        self.out
    }
}

/// Reads bits most-significant first into a 64-bit window; past the end it shifts in zeros,
/// so the caller checks [`BitReader::consumed`] against the real length.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// The next bits, aligned to the top of the word.
    pub(crate) acc: u64,
    pub(crate) avail: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            acc: 0,
            avail: 0,
        }
    }

    /// Make at least 57 bits available in the window.
    #[inline]
    pub fn refill(&mut self) {
        if self.avail > 56 {
            return;
        }
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
            // Load 8 bytes at once; keep the whole bytes that fit. Any extra bits loaded are the
            // real next bits, so loading them again later ORs in the same values.
            let word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            self.acc |= word >> self.avail;
            let bytes = (63 - self.avail) / 8;
            self.pos += bytes as usize;
            self.avail += bytes * 8;
        } else {
            while self.avail <= 56 {
                let byte = self.data.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
                self.acc |= (byte as u64) << (56 - self.avail);
                self.avail += 8;
            }
        }
    }

    #[inline]
    pub fn consume(&mut self, n: u8) {
        self.acc <<= n;
        self.avail -= n as u32;
    }

    /// The next `width` bits (1 to 32) as an unsigned number.
    #[inline]
    pub fn read(&mut self, width: u8) -> u32 {
        if width == 0 {
            return 0;
        }
        if self.avail < width as u32 {
            self.refill();
        }
        let v = (self.acc >> (64 - width as u32)) as u32;
        self.consume(width);
        v
    }

    /// Bits consumed so far (may pass the data's end; the excess read as zeros).
    pub fn consumed(&self) -> u64 {
        self.pos as u64 * 8 - self.avail as u64
    }
}

/// Whether every bit of `data` from bit `from` on is zero (the padding rule).
pub fn zero_from(data: &[u8], from: u64) -> bool {
    let byte = (from / 8) as usize;
    let Some(&first) = data.get(byte) else {
        return true;
    };
    let used = (from % 8) as u32;
    let mask = if used == 0 { 0xff } else { 0xffu8 >> used };
    first & mask == 0 && data[byte + 1..].iter().all(|&b| b == 0)
}

/// Bit `i` of `data`, most-significant first.
#[inline]
pub fn get(data: &[u8], i: usize) -> bool {
    data[i / 8] & (0x80 >> (i % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_msb_first() {
        let mut w = BitWriter::with_capacity(4);
        w.put(0b101, 3);
        w.put(0x1ff, 9);
        w.align();
        w.put(1, 1);
        let bytes = w.finish();
        assert_eq!(bytes, [0b1011_1111, 0b1111_0000, 0b1000_0000]);
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read(3), 0b101);
        assert_eq!(r.read(9), 0x1ff);
        assert_eq!(r.read(4), 0);
        assert_eq!(r.read(1), 1);
        assert_eq!(r.consumed(), 17);
        assert!(get(&bytes, 0) && !get(&bytes, 1) && get(&bytes, 16));
        assert!(zero_from(&bytes, 17) && !zero_from(&bytes, 16) && zero_from(&bytes, 24));
        assert!(zero_from(&[0b1000_0000], 1) && !zero_from(&[0b1000_0001], 1));
    }
}
