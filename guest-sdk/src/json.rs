//! Compact JSON text from any `serde::Serialize` value, byte for byte what
//! `serde_json::to_string` writes, with fewer loops and calls per document.
//!
//! Why not serde_json's own serialiser: inside the sandbox every loop
//! iteration and every call also updates and checks the fuel counter and
//! checks the epoch, so serde_json's byte-at-a-time string escaping (every
//! key, every string value) costs there far more than natively. Here a string
//! of up to 16 bytes (nearly every key and value of a typical document) is
//! checked for characters to escape with two 8-byte words and copied with a
//! few loads and stores, without a loop; longer ones go eight bytes per step.

use serde::ser::{self, Impossible, Serialize};

type Error = serde_json::Error;
type Result<T = ()> = std::result::Result<T, Error>;

/// `value` as JSON text appended to `out`.
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result {
    value.serialize(&mut Json { out })
}

struct Json<'o> {
    out: &'o mut Vec<u8>,
}

/// Appends `bytes`: up to 32 of them without `memcpy`, which Rust compiles to
/// wasm's `memory.copy`, and wasmtime runs every `memory.copy` as a call into
/// the host: dearer than the copy of a few bytes itself.
#[inline(always)]
pub(crate) fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 32 {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` made room for `n` more bytes after `len`; `copy_short`
    // writes exactly the `n` bytes of `bytes` there, then they are counted.
    // `bytes` cannot overlap the spare capacity.
    unsafe {
        copy_short(bytes.as_ptr(), out.as_mut_ptr().add(len), n);
        out.set_len(len + n);
    }
}

/// Copies `n <= 32` bytes with overlapping unaligned loads and stores: the
/// first and last 8 (or 16, 4) bytes cover everything in between.
///
/// # Safety
/// `src` readable and `dst` writable for `n` bytes, not overlapping.
#[inline(always)]
pub(crate) unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    use std::ptr::{read_unaligned as load, write_unaligned as store};
    debug_assert!(n <= 32);
    // SAFETY (all blocks): every offset read or written is below `n`.
    unsafe {
        if n >= 16 {
            let (a, b) = (load(src as *const u64), load(src.add(8) as *const u64));
            let (c, d) = (load(src.add(n - 16) as *const u64), load(src.add(n - 8) as *const u64));
            store(dst as *mut u64, a);
            store(dst.add(8) as *mut u64, b);
            store(dst.add(n - 16) as *mut u64, c);
            store(dst.add(n - 8) as *mut u64, d);
        } else if n >= 8 {
            let (a, b) = (load(src as *const u64), load(src.add(n - 8) as *const u64));
            store(dst as *mut u64, a);
            store(dst.add(n - 8) as *mut u64, b);
        } else if n >= 4 {
            let (a, b) = (load(src as *const u32), load(src.add(n - 4) as *const u32));
            store(dst as *mut u32, a);
            store(dst.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = b;
            *dst.add(n - 1) = c;
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Non-zero when one of the eight bytes of `word` must be escaped in a JSON
/// string: a control character (below 0x20), `"` or `\`. Exact as a yes/no
/// answer: a borrow can only flag a byte above one that is really flagged.
#[inline(always)]
fn must_escape(word: u64) -> u64 {
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * n as u64) & !w & HIGH;
    below(word, 0x20) | below(word ^ (ONES * b'"' as u64), 1) | below(word ^ (ONES * b'\\' as u64), 1)
}

/// Whether a string of at most 16 bytes has nothing to escape, without a loop:
/// its bytes (some read twice) packed into one or two words.
#[inline(always)]
fn short_is_plain(b: &[u8]) -> bool {
    let n = b.len();
    debug_assert!(n <= 16);
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let half = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64;
    let bits = if n >= 8 {
        must_escape(word(0)) | must_escape(word(n - 8))
    } else if n >= 4 {
        must_escape(half(0) | half(n - 4) << 32)
    } else if n > 0 {
        // The first, middle and last byte; the other five are a plain `A`.
        must_escape(0x4141_4141_4100_0000 | b[0] as u64 | (b[n / 2] as u64) << 8 | (b[n - 1] as u64) << 16)
    } else {
        0
    };
    bits == 0
}

/// `text` as a JSON string, quotes included. Inlined: a call costs more in
/// the sandbox than the short path itself.
#[inline(always)]
fn write_str(out: &mut Vec<u8>, text: &str) {
    let b = text.as_bytes();
    let n = b.len();
    if n <= 16 && short_is_plain(b) {
        out.reserve(n + 2);
        let len = out.len();
        // SAFETY: `reserve` made room for the `n + 2` bytes written after
        // `len` (a quote, the text, a quote), which are then counted.
        unsafe {
            let at = out.as_mut_ptr().add(len);
            *at = b'"';
            copy_short(b.as_ptr(), at.add(1), n);
            *at.add(n + 1) = b'"';
            out.set_len(len + n + 2);
        }
    } else {
        write_escaped(out, b);
    }
}

/// A JSON string that is long or has characters to escape: plain runs are
/// skipped eight bytes at a time and copied whole; escapes as serde_json
/// writes them (`\"`, `\\`, `\n` and the like, `\u00XX` for other controls).
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    let (mut run, mut i) = (0, 0);
    while i < b.len() {
        if i + 8 <= b.len() && must_escape(u64::from_le_bytes(b[i..i + 8].try_into().unwrap())) == 0 {
            i += 8;
            continue;
        }
        let byte = b[i];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&b[run..i]);
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(byte >> 4) as usize], HEX[(byte & 15) as usize]]);
                i += 1;
                run = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[run..i]);
        out.extend_from_slice(escape);
        i += 1;
        run = i;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// Inlined: the usual value (see `write_cents`) costs less than a call in
/// the sandbox; the others are written by `write_f64_shortest`.
#[inline(always)]
fn write_f64(out: &mut Vec<u8>, value: f64) {
    if !write_cents(out, value) {
        write_f64_shortest(out, value);
    }
}

#[inline(never)]
fn write_f64_shortest(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        push_bytes(out, zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        push_bytes(out, b"null");
    }
}

/// Zero, and values with at most two decimals from 0.01 up to 10^9 (prices,
/// totals), as zmij writes them (`189.5`, `0.05`, `1200.0`), but without its
/// digit moves (`memory.copy`, a call into wasmtime in the sandbox) and wide
/// multiplies. False for other values. When the double nearest to n/100 is
/// `value`, the decimal n/100 (trailing zeros dropped) is its shortest text:
/// any other decimal with as few digits is at least 0.01 away, and doubles
/// below 10^9 are less than 10^-6 apart.
#[inline(always)]
fn write_cents(out: &mut Vec<u8>, value: f64) -> bool {
    let size = value.abs();
    if size == 0.0 {
        push_bytes(out, if value.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return true;
    }
    if !(0.01..1e9).contains(&size) {
        return false;
    }
    let cents = (size * 100.0 + 0.5) as u64;
    if cents as f64 / 100.0 != size {
        return false;
    }
    if value < 0.0 {
        out.push(b'-');
    }
    write_u64(out, cents / 100);
    let fraction = (cents % 100) as u8;
    let decimals = [b'.', b'0' + fraction / 10, b'0' + fraction % 10];
    push_bytes(out, &decimals[..if fraction.is_multiple_of(10) { 2 } else { 3 }]);
    true
}

fn write_f32(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        push_bytes(out, zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        push_bytes(out, b"null");
    }
}

/// Two decimal digits of each number below 100.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends `value` in decimal, as itoa writes it. Below 10^8 (row numbers,
/// quantities, whole parts of prices) in a few multiplications and table
/// loads, inlined: itoa's loop runs in a function of its own, and the
/// sandbox meters every call and loop step.
#[inline(always)]
pub(crate) fn write_u64(out: &mut Vec<u8>, value: u64) {
    if value >= 100_000_000 {
        return write_int(out, value);
    }
    let value = value as u32;
    let pair = |n: u32| [PAIRS[2 * n as usize], PAIRS[2 * n as usize + 1]];
    let (high, low) = (value / 10_000, value % 10_000);
    let ([a, b], [c, d], [e, f], [g, h]) = (pair(high / 100), pair(high % 100), pair(low / 100), pair(low % 100));
    let digits = [a, b, c, d, e, f, g, h];
    let len = 1
        + usize::from(value >= 10)
        + usize::from(value >= 100)
        + usize::from(value >= 1_000)
        + usize::from(value >= 10_000)
        + usize::from(value >= 100_000)
        + usize::from(value >= 1_000_000)
        + usize::from(value >= 10_000_000);
    push_bytes(out, &digits[8 - len..]);
}

fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    push_bytes(out, itoa::Buffer::new().format(value).as_bytes());
}

/// serde_json's names for the structs its `Number` (arbitrary precision) and
/// `RawValue` serialise as: their one field is JSON text, written as it is.
const RAW_TOKENS: [&str; 2] = ["$serde_json::private::Number", "$serde_json::private::RawValue"];

impl<'a, 'o> ser::Serializer for &'a mut Json<'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = Compound<'a, 'o>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = Compound<'a, 'o>;

    fn serialize_bool(self, v: bool) -> Result {
        push_bytes(self.out, if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result {
        write_u64(self.out, v.into());
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result {
        write_u64(self.out, v.into());
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result {
        write_u64(self.out, v.into());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result {
        write_u64(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result {
        write_f32(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result {
        write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        let mut seq = ser::Serializer::serialize_seq(self, Some(v.len()))?;
        for byte in v {
            ser::SerializeSeq::serialize_element(&mut seq, byte)?;
        }
        ser::SerializeSeq::end(seq)
    }
    fn serialize_none(self) -> Result {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        push_bytes(self.out, b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'o>> {
        self.out.push(b'[');
        Ok(Compound::new(self, b"]"))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'o>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 'o>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _name: &'static str, _index: u32, variant: &'static str, _len: usize) -> Result<Compound<'a, 'o>> {
        self.out.push(b'{');
        write_str(self.out, variant);
        push_bytes(self.out, b":[");
        Ok(Compound::new(self, b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'o>> {
        self.out.push(b'{');
        Ok(Compound::new(self, b"}"))
    }
    #[inline]
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'a, 'o>> {
        if RAW_TOKENS.contains(&name) {
            return Ok(Compound { raw: true, ..Compound::new(self, b"") });
        }
        self.out.push(b'{');
        Ok(Compound::new(self, b"}"))
    }
    fn serialize_struct_variant(self, _name: &'static str, _index: u32, variant: &'static str, _len: usize) -> Result<Compound<'a, 'o>> {
        self.out.push(b'{');
        write_str(self.out, variant);
        push_bytes(self.out, b":{");
        Ok(Compound::new(self, b"}}"))
    }
}

/// An array or object being written: a comma before every element but the
/// first, `close` at the end.
pub(crate) struct Compound<'a, 'o> {
    json: &'a mut Json<'o>,
    first: bool,
    close: &'static [u8],
    /// serde_json's `Number` or `RawValue`: its field is written as it is.
    raw: bool,
}

impl<'a, 'o> Compound<'a, 'o> {
    fn new(json: &'a mut Json<'o>, close: &'static [u8]) -> Self {
        Compound { json, first: true, close, raw: false }
    }

    #[inline(always)]
    fn comma(&mut self) {
        if !self.first {
            self.json.out.push(b',');
        }
        self.first = false;
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.comma();
        value.serialize(&mut *self.json)
    }

    #[inline(always)]
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result {
        if self.raw {
            return value.serialize(RawText(self.json.out));
        }
        self.comma();
        write_str(self.json.out, key);
        self.json.out.push(b':');
        value.serialize(&mut *self.json)
    }

    #[inline(always)]
    fn close(self) -> Result {
        push_bytes(self.json.out, self.close);
        Ok(())
    }
}

/// The four kinds of array: each element after a comma, then `close`.
macro_rules! array_impls {
    ($($trait:ident::$method:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }
            fn end(self) -> Result {
                self.close()
            }
        })*
    };
}

array_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.comma();
        key.serialize(MapKey(self.json.out))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.json.out.push(b':');
        value.serialize(&mut *self.json)
    }
    #[inline(always)]
    fn end(self) -> Result {
        self.close()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.field(key, value)
    }
    #[inline(always)]
    fn end(self) -> Result {
        self.close()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.field(key, value)
    }
    fn end(self) -> Result {
        self.close()
    }
}

/// Methods of a serialiser that only takes some kinds of values; the others
/// fail with `$error`.
macro_rules! refuse {
    ($error:expr; $($method:ident($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ok> {
            Err($error)
        })*
    };
}

macro_rules! refuse_generic {
    ($error:expr; $($method:ident($($arg:ty),*);)*) => {
        $(fn $method<T: Serialize + ?Sized>(self, $(_: $arg,)* _: &T) -> Result {
            Err($error)
        })*
    };
}

fn key_must_be_a_string() -> Error {
    ser::Error::custom("key must be a string")
}

/// Map keys as serde_json writes them: strings, and numbers, booleans and
/// characters in quotes; anything else is an error.
struct MapKey<'o>(&'o mut Vec<u8>);

impl MapKey<'_> {
    fn quoted(self, write: impl FnOnce(&mut Vec<u8>)) -> Result {
        self.0.push(b'"');
        write(self.0);
        self.0.push(b'"');
        Ok(())
    }
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    #[inline]
    fn serialize_str(self, v: &str) -> Result {
        write_str(self.0, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result {
        write_str(self.0, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> Result {
        write_str(self.0, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_bool(self, v: bool) -> Result {
        self.quoted(|out| push_bytes(out, if v { b"true" } else { b"false" }))
    }
    fn serialize_i8(self, v: i8) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_i16(self, v: i16) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_i32(self, v: i32) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_i64(self, v: i64) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_i128(self, v: i128) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_u8(self, v: u8) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_u16(self, v: u16) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_u32(self, v: u32) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_u64(self, v: u64) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_u128(self, v: u128) -> Result {
        self.quoted(|out| write_int(out, v))
    }
    fn serialize_f32(self, v: f32) -> Result {
        if !v.is_finite() {
            return Err(ser::Error::custom("float key must be finite (got NaN or +/-inf)"));
        }
        self.quoted(|out| write_f32(out, v))
    }
    fn serialize_f64(self, v: f64) -> Result {
        if !v.is_finite() {
            return Err(ser::Error::custom("float key must be finite (got NaN or +/-inf)"));
        }
        self.quoted(|out| write_f64(out, v))
    }
    refuse! { key_must_be_a_string();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_seq(Option<usize>) -> Impossible<(), Error>;
        serialize_tuple(usize) -> Impossible<(), Error>;
        serialize_tuple_struct(&'static str, usize) -> Impossible<(), Error>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>;
        serialize_map(Option<usize>) -> Impossible<(), Error>;
        serialize_struct(&'static str, usize) -> Impossible<(), Error>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>;
    }
    refuse_generic! { key_must_be_a_string();
        serialize_some();
        serialize_newtype_variant(&'static str, u32, &'static str);
    }
}

/// The field of serde_json's `Number` and `RawValue`: JSON text, written as it is.
struct RawText<'o>(&'o mut Vec<u8>);

fn not_raw_text() -> Error {
    ser::Error::custom("expected the JSON text of a serde_json Number or RawValue")
}

impl ser::Serializer for RawText<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    refuse! { not_raw_text();
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Impossible<(), Error>;
        serialize_tuple(usize) -> Impossible<(), Error>;
        serialize_tuple_struct(&'static str, usize) -> Impossible<(), Error>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>;
        serialize_map(Option<usize>) -> Impossible<(), Error>;
        serialize_struct(&'static str, usize) -> Impossible<(), Error>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Error>;
    }
    refuse_generic! { not_raw_text();
        serialize_some();
        serialize_newtype_struct(&'static str);
        serialize_newtype_variant(&'static str, u32, &'static str);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, HashMap};

    fn text<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::new();
        write(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Strings of every length from 0 to 80 made of plain, escaped and
    /// multi-byte characters in every position, as values and as keys.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let alphabet = ["a", "\"", "é", "\\", "\n", "€", "z", "\u{1}", "\u{1f}", " ", "\u{7f}", "\t", "\u{8}", "\u{c}", "\r", "/"];
        for len in 0..80 {
            for shift in 0..alphabet.len() {
                for stride in [1, 3, 7] {
                    let s: String = (0..len).map(|i| alphabet[(i * stride + shift) % alphabet.len()]).collect();
                    assert_eq!(text(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                    let map = BTreeMap::from([(s.as_str(), 1)]);
                    assert_eq!(text(&map), serde_json::to_string(&map).unwrap(), "key {s:?}");
                }
            }
            // One character to escape in a long plain run, at every position.
            let plain = "p".repeat(len);
            for at in 0..=len {
                for special in ["\"", "\u{0}", "\u{1f}", "\\"] {
                    let s = format!("{}{special}{}", &plain[..at], &plain[at..]);
                    assert_eq!(text(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn every_single_byte_string_is_written_as_serde_json_writes_it() {
        for c in (0..=0x7f_u8).map(char::from).chain(['é', '€', '\u{10ffff}']) {
            for s in [c.to_string(), format!("{c}xy"), format!("abcd{c}fgh"), format!("abcdefgh{c}jklmnop")] {
                assert_eq!(text(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            }
            assert_eq!(text(&c), serde_json::to_string(&c).unwrap());
        }
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Newtype(u8);

    #[derive(Serialize)]
    struct Pair(i32, &'static str);

    #[derive(Serialize)]
    enum Shape {
        Point,
        Circle(f64),
        Line(i8, i8),
        Box { w: u16, h: u16 },
    }

    #[derive(Serialize)]
    struct Everything<'a> {
        yes: bool,
        no: bool,
        small: i8,
        big: i128,
        huge: u128,
        min: i64,
        max: u64,
        floats: Vec<f64>,
        single: f32,
        nan32: f32,
        letter: char,
        none: Option<u8>,
        some: Option<&'a str>,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        pair: Pair,
        tuple: (u8, &'a str, bool),
        empty_list: Vec<u8>,
        empty_map: BTreeMap<String, u8>,
        shapes: Vec<Shape>,
        #[serde(with = "serde_bytes_as_seq")]
        bytes: &'a [u8],
        int_keys: BTreeMap<i32, &'a str>,
        bool_keys: BTreeMap<bool, u8>,
        char_keys: BTreeMap<char, u8>,
        value: serde_json::Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(flatten)]
        flat: HashMap<&'a str, u8>,
    }

    mod serde_bytes_as_seq {
        pub fn serialize<S: serde::Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(bytes)
        }
    }

    #[test]
    fn every_kind_of_value_is_written_as_serde_json_writes_it() {
        let doc = Everything {
            yes: true,
            no: false,
            small: -128,
            big: i128::MIN,
            huge: u128::MAX,
            min: i64::MIN,
            max: u64::MAX,
            floats: vec![
                0.0,
                -0.0,
                1.0,
                0.1,
                189.5,
                1e300,
                -2.5e-310,
                f64::MAX,
                f64::MIN_POSITIVE,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1e21,
                123456789.125,
            ],
            single: 0.3,
            nan32: f32::NAN,
            letter: '"',
            none: None,
            some: Some("x"),
            unit: (),
            unit_struct: Unit,
            newtype: Newtype(7),
            pair: Pair(-1, "b"),
            tuple: (1, "two", true),
            empty_list: vec![],
            empty_map: BTreeMap::new(),
            shapes: vec![Shape::Point, Shape::Circle(1.5), Shape::Line(-1, 1), Shape::Box { w: 2, h: 3 }],
            bytes: b"\x00\xff",
            int_keys: BTreeMap::from([(-5, "a"), (10, "b")]),
            bool_keys: BTreeMap::from([(false, 0), (true, 1)]),
            char_keys: BTreeMap::from([('\n', 1)]),
            value: serde_json::json!({"a": [1, 2.5, null, "s\u{1}", {"b": {}}], "c": [], "d": -0.0}),
            skipped: None,
            flat: HashMap::from([("flat", 1)]),
        };
        assert_eq!(text(&doc), serde_json::to_string(&doc).unwrap());
    }

    /// Every value of up to two decimals below 21,000 and a sample of every
    /// magnitude up to 10^17 (far past the fast path's limit), each with both
    /// neighbouring doubles, its negation and a thousandth: the text
    /// serde_json writes.
    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        let (mut next, mut digits) = (crate::seeded(0x2545_f491_4f6c_dd1d), 0);
        let sample = std::iter::from_fn(move || {
            digits = digits % 17 + 3;
            Some(next() % 10u64.pow(digits))
        });
        for cents in (0..2_100_000).chain(sample.take(300_000)) {
            let value = cents as f64 / 100.0;
            for v in [value, value.next_up(), value.next_down(), -value, value / 1000.0] {
                assert_eq!(text(&v), serde_json::to_string(&v).unwrap(), "{v:?}");
            }
        }
    }

    #[test]
    fn write_u64_is_itoa() {
        let mut next = crate::seeded(0x2545_f491_4f6c_dd1d);
        let random = std::iter::repeat_with(move || {
            let n = next();
            n >> (n % 64)
        });
        for value in (0..2_000_000).chain([99_999_999, 100_000_000, u64::MAX]).chain(random.take(1_000_000)) {
            let mut out = b"x".to_vec();
            write_u64(&mut out, value);
            assert_eq!(&out[1..], itoa::Buffer::new().format(value).as_bytes(), "{value}");
        }
    }

    #[test]
    fn cents_take_the_short_path_and_others_do_not() {
        for (value, short) in [
            (189.5, true),
            (0.05, true),
            (1200.0, true),
            (-0.01, true),
            (0.0, true),
            (0.005, false),
            (1e9, false),
            (0.1 + 0.2, false),
            (f64::NAN, false),
        ] {
            assert_eq!(write_cents(&mut Vec::new(), value), short, "{value}");
        }
    }

    #[test]
    fn keys_serde_json_refuses_are_refused() {
        let by_list = BTreeMap::from([(vec![1], 1)]);
        assert_eq!(write(&mut Vec::new(), &by_list).unwrap_err().to_string(), "key must be a string");
        assert!(serde_json::to_string(&by_list).is_err());
        let by_nan = HashMap::from([(Key(f64::NAN), 1)]);
        assert!(write(&mut Vec::new(), &by_nan).unwrap_err().to_string().contains("finite"));
        assert!(serde_json::to_string(&by_nan).is_err());
        assert_eq!(text(&HashMap::from([(Key(2.5), 1)])), serde_json::to_string(&HashMap::from([(Key(2.5), 1)])).unwrap());
    }

    #[derive(PartialEq, Serialize)]
    struct Key(f64);
    impl Eq for Key {}
    impl std::hash::Hash for Key {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.to_bits().hash(state)
        }
    }

    #[test]
    fn copy_short_copies_exactly_n_bytes() {
        let src: Vec<u8> = (1..=32).collect();
        for n in 0..=32 {
            let mut dst = [0u8; 40];
            // SAFETY: `src` has 32 bytes, `dst` 40; they do not overlap.
            unsafe { copy_short(src.as_ptr(), dst.as_mut_ptr(), n) };
            assert_eq!(&dst[..n], &src[..n], "n = {n}");
            assert!(dst[n..].iter().all(|&b| b == 0), "n = {n} wrote past the end");
        }
    }

    /// Plain strings of up to 16 bytes take the loop-free path; one byte to
    /// escape anywhere sends them to the other.
    #[test]
    fn short_plain_strings_are_recognised() {
        let plain = b"abcdefghijklmnop";
        for n in 0..=16 {
            assert!(short_is_plain(&plain[..n]), "{n} bytes");
            for at in 0..n {
                for special in [b'"', b'\\', 0, 0x1f] {
                    let mut text = plain[..n].to_vec();
                    text[at] = special;
                    assert!(!short_is_plain(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn must_escape_flags_exactly_the_bytes_json_escapes() {
        for byte in 0..=255u8 {
            let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
            for at in 0..8 {
                // The byte among plain ones, and among bytes just above each limit.
                for filler in [b'a', 0x20, 0x23, 0x5d, 0x80, 0xff] {
                    let mut word = [filler; 8];
                    word[at] = byte;
                    assert_eq!(must_escape(u64::from_le_bytes(word)) != 0, escaped, "byte {byte:#x} at {at} among {filler:#x}");
                }
            }
        }
    }
}
