//! Numbers from text, for the fields of a row.

/// `text.parse::<f64>().ok()`, with a shortcut for the usual text of a price
/// or a measure: at most 15 decimal digits with at most one point (`189.5`,
/// `0.05`, `12`). Its value is then the digits as an integer (exact below
/// 2^53) divided by a power of ten (exact up to 10^22), and that one
/// correctly rounded division is the correctly rounded value of the text,
/// as `str::parse` gives it. Other text (signs, exponents, more digits,
/// `inf`) goes to `str::parse`, whose general path costs several calls and
/// loops, which the sandbox meters.
#[inline(always)]
pub fn parse_f64(text: &str) -> Option<f64> {
    match short_decimal(text.as_bytes()) {
        Some(value) => Some(value),
        None => text.parse().ok(),
    }
}

#[inline(always)]
fn short_decimal(text: &[u8]) -> Option<f64> {
    const POWERS: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    if text.len() > 16 {
        return None;
    }
    let (mut digits, mut value, mut point) = (0, 0u64, None);
    for (i, &byte) in text.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                value = value * 10 + u64::from(byte - b'0');
                digits += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if digits == 0 || digits > 15 {
        return None;
    }
    let decimals = point.map_or(0, |i| text.len() - 1 - i);
    Some(value as f64 / POWERS[decimals])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_f64_is_str_parse() {
        let fixed = [
            "",
            ".",
            "0",
            "0.0",
            "189.5",
            "0.05",
            "5.",
            ".5",
            "..5",
            "1.2.3",
            "007",
            "999999999999999",
            "9999999999999999",
            "0.000000000000001",
            "123456789012345.",
            "12345678901234.5",
            "0.1",
            "0.3",
            "+1",
            "-1",
            "1e5",
            "inf",
            "NaN",
            " 1",
            "1 ",
        ];
        let mut next = crate::seeded(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"0123456789012345678901234567890123456789..+-e";
        let random = (0..200_000).map(|_| {
            let len = (next() % 19) as usize;
            (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect::<String>()
        });
        for text in fixed.into_iter().map(String::from).chain(random) {
            let (ours, std) = (parse_f64(&text), text.parse::<f64>().ok());
            assert_eq!(ours.map(f64::to_bits), std.map(f64::to_bits), "{text:?}");
        }
    }
}
