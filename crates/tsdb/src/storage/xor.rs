//! Prometheus' XOR chunk encoding (Gorilla): the format of the head's
//! chunks. Bytes 0..2 hold the sample count (big-endian u16); then a bit
//! stream: the first timestamp as a signed varint and the first value's 64
//! bits, the second timestamp's delta as an unsigned varint and its value
//! XORed with the first, then delta-of-delta timestamps in 1, 16, 20, 24 or
//! 68 bits and XORed values with leading/trailing-zero windows.

/// Most samples in one chunk, as in Prometheus.
pub const MAX_SAMPLES: u16 = 120;

#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0 when a new byte is needed).
    free: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    fn write_byte(&mut self, byte: u8) {
        if self.free == 0 {
            self.bytes.push(byte);
            return;
        }
        let free = self.free;
        if let Some(last) = self.bytes.last_mut() {
            *last |= byte >> (8 - free);
        }
        self.bytes.push(byte << free);
    }

    /// Writes the low `n` bits of `v`, most significant first.
    fn write_bits(&mut self, v: u64, n: u8) {
        let mut n = n;
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let mut v = if n == 0 { 0 } else { v << (64 - n) };
        while n >= 8 {
            self.write_byte((v >> 56) as u8);
            v <<= 8;
            n -= 8;
        }
        while n > 0 {
            self.write_bit(v >> 63 == 1);
            v <<= 1;
            n -= 1;
        }
    }
}

#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Some(bit)
    }

    /// Reads `n` (≤ 64) bits, most significant first: up to 56 bits come
    /// from one 8-byte window (the byte-at-a-time loop this replaced was a
    /// sixth of a range query's time).
    fn read_bits(&mut self, n: u8) -> Option<u64> {
        let n = usize::from(n);
        if self.pos + n > self.bytes.len() * 8 {
            return None;
        }
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let high = self.read_bits(32)?;
            let low = self.read_bits((n - 32) as u8)?;
            return Some((high << (n - 32)) | low);
        }
        let window = self.window(self.pos / 8) << (self.pos % 8);
        self.pos += n;
        Some(window >> (64 - n))
    }

    /// The 8 bytes from byte `i` on as a big-endian number, zeros past the
    /// end.
    fn window(&self, i: usize) -> u64 {
        let mut buf = [0u8; 8];
        match self.bytes.get(i..i + 8) {
            Some(full) => buf.copy_from_slice(full),
            None => {
                let rest = self.bytes.get(i..).unwrap_or(&[]);
                let len = rest.len().min(8);
                buf[..len].copy_from_slice(&rest[..len]);
            }
        }
        u64::from_be_bytes(buf)
    }

    fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }

    fn read_uvarint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.read_byte()?;
            if shift >= 64 {
                return None;
            }
            x |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(x);
            }
            shift += 7;
        }
    }

    fn read_varint(&mut self) -> Option<i64> {
        self.read_uvarint().map(super::varint::unzigzag)
    }
}

fn uvarint_bytes(mut x: u64, out: &mut BitWriter) {
    while x >= 0x80 {
        out.write_byte((x as u8) | 0x80);
        x >>= 7;
    }
    out.write_byte(x as u8);
}

fn varint_bytes(x: i64, out: &mut BitWriter) {
    uvarint_bytes(super::varint::zigzag(x), out);
}

/// True when `x` fits Prometheus' `nbits` window, which is
/// `[-(2^(n-1) - 1), 2^(n-1)]`: one more positive value than two's
/// complement, matched by the reader.
fn bit_range(x: i64, nbits: u8) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= (1i64 << (nbits - 1))
}

/// Appends samples to an XOR chunk. Timestamps must increase.
#[derive(Debug, Clone)]
pub struct XorAppender {
    bits: BitWriter,
    count: u16,
    t: i64,
    t_delta: u64,
    v: u64,
    leading: u8,
    trailing: u8,
    min_t: i64,
}

impl Default for XorAppender {
    fn default() -> Self {
        let mut bits = BitWriter::default();
        bits.bytes.extend_from_slice(&[0, 0]);
        Self {
            bits,
            count: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0xff,
            trailing: 0,
            min_t: 0,
        }
    }
}

impl XorAppender {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn is_full(&self) -> bool {
        self.count >= MAX_SAMPLES
    }

    /// First timestamp (meaningless when empty).
    pub fn min_time(&self) -> i64 {
        self.min_t
    }

    /// Last timestamp (meaningless when empty).
    pub fn max_time(&self) -> i64 {
        self.t
    }

    /// Last value's bits (meaningless when empty).
    pub fn last_value(&self) -> f64 {
        f64::from_bits(self.v)
    }

    /// Appends one sample; the caller keeps timestamps increasing.
    pub fn append(&mut self, t: i64, v: f64) {
        let vbits = v.to_bits();
        match self.count {
            0 => {
                varint_bytes(t, &mut self.bits);
                self.bits.write_bits(vbits, 64);
                self.min_t = t;
            }
            1 => {
                let delta = t.wrapping_sub(self.t) as u64;
                uvarint_bytes(delta, &mut self.bits);
                self.write_value(vbits);
                self.t_delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t) as u64;
                let dod = delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.bits.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.bits.write_bits(0b10, 2);
                    self.bits.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.bits.write_bits(0b110, 3);
                    self.bits.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.bits.write_bits(0b1110, 4);
                    self.bits.write_bits(dod as u64, 20);
                } else {
                    self.bits.write_bits(0b1111, 4);
                    self.bits.write_bits(dod as u64, 64);
                }
                self.write_value(vbits);
                self.t_delta = delta;
            }
        }
        self.t = t;
        self.v = vbits;
        self.count += 1;
        let [hi, lo] = self.count.to_be_bytes();
        self.bits.bytes[0] = hi;
        self.bits.bytes[1] = lo;
    }

    fn write_value(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        let mut leading = delta.leading_zeros() as u8;
        let trailing = delta.trailing_zeros() as u8;
        if leading >= 32 {
            leading = 31;
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.bits.write_bit(false);
            self.bits
                .write_bits(delta >> self.trailing, 64 - self.leading - self.trailing);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        self.bits.write_bit(true);
        self.bits.write_bits(u64::from(leading), 5);
        let sig = 64 - leading - trailing;
        // 64 significant bits are written as 0: they cannot be 0.
        self.bits.write_bits(u64::from(sig), 6);
        self.bits.write_bits(delta >> trailing, sig);
    }

    /// The encoded chunk.
    pub fn bytes(&self) -> &[u8] {
        &self.bits.bytes
    }

    /// Rebuilds an appender from an encoded chunk, so appends continue it
    /// (after a restart). `None` when the bytes are not a valid chunk.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut app = Self::new();
        for (t, v) in XorIter::new(bytes) {
            if app.count > 0 && t <= app.t {
                return None;
            }
            app.append(t, v);
        }
        let expected = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
        (app.count == expected).then_some(app)
    }
}

/// Iterates the samples of an XOR chunk; stops early on corrupt input.
#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    reader: BitReader<'a>,
    total: u16,
    read: u16,
    t: i64,
    t_delta: u64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> XorIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let total = match bytes {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        Self {
            reader: BitReader {
                bytes: bytes.get(2..).unwrap_or(&[]),
                pos: 0,
            },
            total,
            read: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    fn read_value(&mut self) -> Option<()> {
        if !self.reader.read_bit()? {
            return Some(());
        }
        if self.reader.read_bit()? {
            self.leading = self.reader.read_bits(5)? as u8;
            let mut sig = self.reader.read_bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64u8.checked_sub(self.leading)?.checked_sub(sig)?;
        }
        let sig = 64u8.checked_sub(self.leading)?.checked_sub(self.trailing)?;
        let bits = self.reader.read_bits(sig)?;
        self.v ^= bits.checked_shl(u32::from(self.trailing)).unwrap_or(0);
        Some(())
    }

    fn next_sample(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = self.reader.read_varint()?;
                self.v = self.reader.read_bits(64)?;
            }
            1 => {
                self.t_delta = self.reader.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                let mut prefix = 0u8;
                for _ in 0..4 {
                    if !self.reader.read_bit()? {
                        break;
                    }
                    prefix += 1;
                }
                let dod = match prefix {
                    0 => 0,
                    n => {
                        let nbits = [0u8, 14, 17, 20, 64][usize::from(n)];
                        let raw = self.reader.read_bits(nbits)?;
                        if nbits == 64 {
                            raw as i64
                        } else if raw > (1 << (nbits - 1)) {
                            (raw as i64) - (1i64 << nbits)
                        } else {
                            raw as i64
                        }
                    }
                };
                self.t_delta = self.t_delta.wrapping_add(dod as u64);
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v)))
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.read >= self.total {
            return None;
        }
        let out = self.next_sample();
        if out.is_none() {
            self.read = self.total;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(samples: &[(i64, f64)]) {
        let mut app = XorAppender::new();
        for &(t, v) in samples {
            app.append(t, v);
        }
        let got: Vec<(i64, u64)> = XorIter::new(app.bytes())
            .map(|(t, v)| (t, v.to_bits()))
            .collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
        let again = XorAppender::from_bytes(app.bytes()).expect("valid chunk");
        assert_eq!(again.bytes(), app.bytes());
    }

    #[test]
    fn encodes_like_prometheus() {
        // The first bytes Prometheus writes for (1000, 1.0), (2000, 2.0),
        // (3000, 3.0): count 3, varint 1000 -> d0 0f, then 1.0's bits.
        let mut app = XorAppender::new();
        app.append(1000, 1.0);
        assert_eq!(
            app.bytes(),
            &[0, 1, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]
        );
        app.append(2000, 2.0);
        app.append(3000, 3.0);
        assert_eq!(&app.bytes()[..2], &[0, 3]);
        roundtrip(&[(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
    }

    #[test]
    fn regular_scrapes_are_small_and_stale_markers_survive() {
        let mut samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, 5.0))
            .collect();
        samples[60].1 = crate::promql::stale_nan();
        let mut app = XorAppender::new();
        for &(t, v) in &samples {
            app.append(t, v);
        }
        assert!(app.bytes().len() < 80, "{} bytes", app.bytes().len());
        roundtrip(&samples);
    }

    #[test]
    fn corrupt_input_does_not_panic() {
        for bytes in [&[][..], &[0, 5], &[0xff, 0xff, 1, 2, 3], &[0, 3, 0xd0]] {
            let _ = XorIter::new(bytes).count();
            let _ = XorAppender::from_bytes(bytes);
        }
    }

    proptest! {
        #[test]
        fn any_increasing_series_roundtrips(
            start in -1_000_000_000_000i64..1_000_000_000_000,
            steps in proptest::collection::vec((1i64..100_000_000, any::<u64>()), 1..200),
        ) {
            let mut t = start;
            let mut samples = Vec::new();
            for (dt, bits) in steps {
                t += dt;
                samples.push((t, f64::from_bits(bits)));
            }
            samples.truncate(MAX_SAMPLES as usize);
            roundtrip(&samples);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = XorIter::new(&bytes).count();
        }
    }
}
