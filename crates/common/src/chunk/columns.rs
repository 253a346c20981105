//! Log text split into three columns before compression, so that a fast
//! compressor level does what a slow one does on the plain text.
//!
//! Most bytes of a log line that a general-purpose compressor cannot
//! predict are long numbers (timestamps' fractions, sizes, ids) and
//! random identifiers (request and trace ids in hex). Taking them out of
//! the text leaves a column of near-identical line templates, which even
//! zstd's faster levels shrink many times over, and two small columns of
//! values: numbers as varints and hex ids as packed nibbles, half the size
//! of their text. Short numbers stay in the text ([`MIN_NUMBER_DIGITS`]).
//! On genlogs' mixed logs, with the lines also regrouped by format
//! ([`super::group`]) and the text at zstd level 3, this stores 5.6x where
//! zstd alone stores 5.5x at level 9, four times slower (BENCHMARKS.md).
//!
//! The text column holds every other byte as is, and two-byte placeholders:
//! - `NUMBER len`: a run of `len` ASCII digits (1 to 19, leading zeros
//!   kept by the length), its value the next varint of the numbers column
//!   (runs of at least [`MIN_NUMBER_DIGITS`] are written so, in parts of
//!   at most 19 digits; reading accepts any length from 1);
//! - `HEX len`: a word of `len` lowercase hex digits, letters and digits
//!   both (at least [`MIN_HEX_DIGITS`]), its nibbles the next
//!   `len.div_ceil(2)` bytes of the hex column;
//! - `ESCAPE byte`: a byte of the input that is itself a placeholder code.
//!
//! The codes (0xF5 to 0xF7) never occur in UTF-8, so escaping costs nothing
//! on log lines; it keeps the transform lossless on any bytes.

use prost::encoding::{decode_varint, encode_varint};

use super::ChunkError;

const NUMBER: u8 = 0xF5;
const HEX: u8 = 0xF6;
const ESCAPE: u8 = 0xF7;
/// Most digits whose value fits a u64 whatever they are.
const MAX_NUMBER_DIGITS: usize = 19;
/// Shorter digit runs stay in the text: they are mostly parts of the
/// line's template (status codes, years, versions, small counts), which
/// the compressor matches there and entropy-codes at about 3.3 bits per
/// digit, while a varint costs a byte and its placeholder breaks the
/// template's matches. On genlogs' logs, 5 stores 5-9% more compactly
/// than taking every digit run out (BENCHMARKS.md).
const MIN_NUMBER_DIGITS: usize = 5;
/// Shorter hex words are mostly real words ("cafe", "added") or short
/// numbers, which gain nothing from packing.
pub const MIN_HEX_DIGITS: usize = 8;
const MAX_HEX_DIGITS: usize = u8::MAX as usize;

/// The three columns of a text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Columns {
    pub text: Vec<u8>,
    pub numbers: Vec<u8>,
    pub hex: Vec<u8>,
}

impl Columns {
    pub fn clear(&mut self) {
        self.text.clear();
        self.numbers.clear();
        self.hex.clear();
    }
}

/// Byte classes of the splitter; a word is a run of digits and letters.
const OTHER: u8 = 0;
const DIGIT: u8 = 1;
const HEX_LETTER: u8 = 2;
const LETTER: u8 = 4;
const WORD: u8 = DIGIT | HEX_LETTER | LETTER;
const CODE: u8 = 8;

static CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = if byte.is_ascii_digit() {
            DIGIT
        } else if byte >= b'a' && byte <= b'f' {
            HEX_LETTER
        } else if byte.is_ascii_alphabetic() {
            LETTER
        } else if byte >= NUMBER && byte <= ESCAPE {
            CODE
        } else {
            OTHER
        };
        b += 1;
    }
    table
};

/// Splits `input` into `out` (appending).
pub fn split(input: &[u8], out: &mut Columns) {
    out.text.reserve(input.len());
    let n = input.len();
    // Text is copied in runs: `input[copied..]` is not in `out.text` yet,
    // and only placeholders interrupt a run. Only digits and code bytes
    // need a look; words without digits stay in the run, and so do words
    // whose digits stay text.
    let mut copied = 0;
    // Where the last word looked at ended: words are maximal, so the next
    // one starts at or after it (this keeps the scan linear).
    let mut floor = 0;
    let mut i = 0;
    loop {
        i = next_digit_or_code(input, i);
        if i >= n {
            break;
        }
        if CLASS[usize::from(input[i])] == CODE {
            out.text.extend_from_slice(&input[copied..i]);
            out.text.push(ESCAPE);
            copied = i;
            i += 1;
            floor = i;
            continue;
        }
        let mut start = i;
        while start > floor && CLASS[usize::from(input[start - 1])] & WORD != 0 {
            start -= 1;
        }
        let mut kinds = 0;
        let mut end = start;
        while end < n {
            let class = CLASS[usize::from(input[end])];
            if class & WORD == 0 {
                break;
            }
            kinds |= class;
            end += 1;
        }
        let word = &input[start..end];
        if is_hex_id(word, kinds) {
            out.text.extend_from_slice(&input[copied..start]);
            put_hex_id(word, out);
            copied = end;
        } else {
            // Long digit runs become numbers; the rest stays in the run.
            let mut j = i - start;
            while j < word.len() {
                if !word[j].is_ascii_digit() {
                    j += 1;
                    continue;
                }
                let run_start = j;
                while j < word.len() && word[j].is_ascii_digit() {
                    j += 1;
                }
                if j - run_start >= MIN_NUMBER_DIGITS {
                    out.text
                        .extend_from_slice(&input[copied..start + run_start]);
                    put_numbers(&word[run_start..j], out);
                    copied = start + j;
                }
            }
        }
        i = end;
        floor = end;
    }
    out.text.extend_from_slice(&input[copied..]);
}

/// The position of the first ASCII digit or placeholder code at or after
/// `from` (`input.len()` if none), eight bytes at a time: most of a log
/// line is neither.
fn next_digit_or_code(input: &[u8], mut from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    loop {
        let window = input
            .get(from..from + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok());
        let Some(window) = window else {
            // Fewer than eight bytes left.
            return (from..input.len())
                .find(|&i| matches!(CLASS[usize::from(input[i])], DIGIT | CODE))
                .unwrap_or(input.len());
        };
        let word = u64::from_le_bytes(window);
        // Digits become bytes below 10; a byte below 10 is then found with
        // the borrow trick (exact about whether one exists). Non-ASCII
        // bytes (codes among them) are looked at one by one.
        let shifted = word ^ (0x30 * ONES);
        let has_digit = shifted.wrapping_sub(10 * ONES) & !shifted & HIGH;
        if has_digit | (word & HIGH) != 0
            && let Some(offset) = window
                .iter()
                .position(|&b| matches!(CLASS[usize::from(b)], DIGIT | CODE))
        {
            return from + offset;
        }
        from += 8;
    }
}

/// Whether a word (with the classes of its bytes) is a hex id: lowercase
/// hex digits, letters and digits both, long enough to gain from packing.
fn is_hex_id(word: &[u8], kinds: u8) -> bool {
    kinds == DIGIT | HEX_LETTER && word.len() >= MIN_HEX_DIGITS
}

/// One word holding digits, given the classes of its bytes: the
/// definition that [`split`] implements faster.
#[cfg(test)]
fn split_word(word: &[u8], kinds: u8, out: &mut Columns) {
    if is_hex_id(word, kinds) {
        put_hex_id(word, out);
        return;
    }
    let mut i = 0;
    while i < word.len() {
        let start = i;
        while i < word.len() && word[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= MIN_NUMBER_DIGITS {
            put_numbers(&word[start..i], out);
        } else if i == start {
            out.text.push(word[i]);
            i += 1;
        } else {
            out.text.extend_from_slice(&word[start..i]);
        }
    }
}

/// A run of at least [`MIN_NUMBER_DIGITS`] digits, as numbers of at most
/// [`MAX_NUMBER_DIGITS`] digits each.
fn put_numbers(digits: &[u8], out: &mut Columns) {
    for part in digits.chunks(MAX_NUMBER_DIGITS) {
        let value = part
            .iter()
            .fold(0u64, |value, d| value * 10 + u64::from(d - b'0'));
        out.text.extend_from_slice(&[NUMBER, part.len() as u8]);
        encode_varint(value, &mut out.numbers);
    }
}

fn put_hex_id(word: &[u8], out: &mut Columns) {
    for part in word.chunks(MAX_HEX_DIGITS) {
        put_hex(part, out);
    }
}

fn nibble(b: u8) -> u8 {
    if b.is_ascii_digit() {
        b - b'0'
    } else {
        b - b'a' + 10
    }
}

fn put_hex(digits: &[u8], out: &mut Columns) {
    if digits.len() < MIN_HEX_DIGITS {
        // The tail of a very long word: too short to be worth a placeholder.
        out.text.extend_from_slice(digits);
        return;
    }
    out.text.extend_from_slice(&[HEX, digits.len() as u8]);
    for pair in digits.chunks(2) {
        let low = pair.get(1).map_or(0, |&b| nibble(b));
        out.hex.push(nibble(pair[0]) << 4 | low);
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Rebuilds the input of [`split`] from its columns, appending to `out`.
/// Fails on columns that [`split`] cannot have produced.
pub fn join(columns: &Columns, out: &mut Vec<u8>) -> Result<(), ChunkError> {
    let malformed = ChunkError::Malformed;
    let mut numbers = columns.numbers.as_slice();
    let mut hex = columns.hex.as_slice();
    let mut text = columns.text.as_slice();
    let mut digits = [0u8; MAX_NUMBER_DIGITS];
    while let Some(pos) = memchr::memchr3(NUMBER, HEX, ESCAPE, text) {
        out.extend_from_slice(&text[..pos]);
        let (code, rest) = (text[pos], &text[pos + 1..]);
        let Some((&arg, rest)) = rest.split_first() else {
            return Err(malformed("placeholder without its length"));
        };
        text = rest;
        match code {
            NUMBER => {
                let len = usize::from(arg);
                if len == 0 || len > MAX_NUMBER_DIGITS {
                    return Err(malformed("number placeholder with a bad length"));
                }
                let mut value = decode_varint(&mut numbers)
                    .map_err(|_| malformed("numbers column truncated"))?;
                for d in digits[..len].iter_mut().rev() {
                    *d = b'0' + (value % 10) as u8;
                    value /= 10;
                }
                if value != 0 {
                    return Err(malformed("number longer than its placeholder"));
                }
                out.extend_from_slice(&digits[..len]);
            }
            HEX => {
                let len = usize::from(arg);
                let bytes = len.div_ceil(2);
                if len < MIN_HEX_DIGITS || hex.len() < bytes {
                    return Err(malformed("hex column truncated"));
                }
                for (i, &b) in hex[..bytes].iter().enumerate() {
                    out.push(HEX_DIGITS[usize::from(b >> 4)]);
                    if 2 * i + 1 < len {
                        out.push(HEX_DIGITS[usize::from(b & 0xF)]);
                    }
                }
                hex = &hex[bytes..];
            }
            _ => out.push(arg),
        }
    }
    out.extend_from_slice(text);
    if !numbers.is_empty() || !hex.is_empty() {
        return Err(malformed("values left over in a column"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(input: &[u8]) -> Columns {
        let mut columns = Columns::default();
        split(input, &mut columns);
        let mut back = Vec::new();
        join(&columns, &mut back).expect("join what split made");
        assert_eq!(back, input, "{:?}", String::from_utf8_lossy(input));
        columns
    }

    #[test]
    fn numbers_and_hex_ids_leave_the_text() {
        let line = b"ts=2026-01-01T00:00:00.000363Z request_id=83efa9f3a1c7cc8a04351b64893ad232 pod=a-f35836-xj5dc bytes=007\n";
        let columns = round_trip(line);
        assert!(!columns.text.windows(6).any(|w| w == b"000363"));
        assert!(!columns.text.windows(8).any(|w| w == b"83efa9f3"));
        assert_eq!(columns.hex.len(), 16);
        // Short hex-looking words stay text; their long digit runs are
        // numbers, short ones text.
        assert!(columns.text.windows(3).any(|w| w == b"a-f"));
        assert!(!columns.text.windows(5).any(|w| w == b"35836"));
        assert!(columns.text.windows(5).any(|w| w == b"xj5dc"));
        assert!(columns.text.windows(4).any(|w| w == b"2026"));
        assert!(columns.text.windows(3).any(|w| w == b"007"));
        assert_eq!(columns.numbers.len(), 2 + 3);
    }

    #[test]
    fn edge_cases_round_trip() {
        for input in [
            &b""[..],
            b"0",
            b"00000000000000000000000000000000000000000123",
            b"18446744073709551615999",
            b"deadbeef",
            b"DEADBEEF01 deadbeef01 0123456789abcdef0123456789abcdef01234",
            b"\xF5\x01\xF6\xF7\xFF",
            b"caf\xC3\xA9 12\n34",
        ] {
            round_trip(input);
        }
        let long_hex: Vec<u8> = (0..600).map(|i| HEX_DIGITS[i % 16]).collect();
        round_trip(&long_hex);
    }

    #[test]
    fn malformed_columns_are_errors() {
        let bad = [
            Columns {
                text: vec![NUMBER],
                ..Columns::default()
            },
            Columns {
                text: vec![NUMBER, 2],
                numbers: vec![200],
                ..Columns::default()
            },
            Columns {
                text: vec![NUMBER, 1],
                numbers: vec![12],
                ..Columns::default()
            },
            Columns {
                text: vec![HEX, 8],
                hex: vec![1, 2],
                ..Columns::default()
            },
            Columns {
                text: b"x".to_vec(),
                numbers: vec![1],
                ..Columns::default()
            },
        ];
        for columns in bad {
            assert!(join(&columns, &mut Vec::new()).is_err(), "{columns:?}");
        }
    }

    /// The splitter's definition, one byte at a time.
    fn split_slowly(input: &[u8]) -> Columns {
        let mut out = Columns::default();
        let mut i = 0;
        while i < input.len() {
            let class = CLASS[usize::from(input[i])];
            if class & WORD == 0 {
                if class == CODE {
                    out.text.push(ESCAPE);
                }
                out.text.push(input[i]);
                i += 1;
                continue;
            }
            let start = i;
            let mut kinds = 0;
            while i < input.len() && CLASS[usize::from(input[i])] & WORD != 0 {
                kinds |= CLASS[usize::from(input[i])];
                i += 1;
            }
            if kinds & DIGIT == 0 {
                out.text.extend_from_slice(&input[start..i]);
            } else {
                split_word(&input[start..i], kinds, &mut out);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn fast_split_is_the_definition(
            input in proptest::collection::vec(
                proptest::sample::select(
                    b"af0123456789g =.\xC3\xA9\xF5\xF6\xF7\xFF".to_vec(),
                ),
                0..160,
            ),
        ) {
            let mut fast = Columns::default();
            split(&input, &mut fast);
            prop_assert_eq!(fast, split_slowly(&input));
        }

        #[test]
        fn any_bytes_round_trip(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            round_trip(&input);
        }

        #[test]
        fn log_like_text_round_trips(input in "[a-f0-9 =.:\\-]{0,300}") {
            round_trip(input.as_bytes());
        }

        #[test]
        fn any_columns_never_panic(
            text in proptest::collection::vec(any::<u8>(), 0..100),
            numbers in proptest::collection::vec(any::<u8>(), 0..40),
            hex in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let _ = join(&Columns { text, numbers, hex }, &mut Vec::new());
        }
    }
}
