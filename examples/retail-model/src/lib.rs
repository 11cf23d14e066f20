//! The order model of tenant `retail`, shared by its pipelines. The shops
//! send order lines as CSV:
//!
//! `order_id,order_date,customer_id,customer_name,country,sku,product,category,quantity,unit_price,discount,currency`
//!
//! [`order_document`] turns a valid line into an order document with typed
//! fields, a nested customer and item, and derived fields (line total in the
//! shop currency and in EUR, weekday, size class), or says why it is rejected.

use mysimbdp::prelude::*;
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// Pipeline parameters, read once per file from the tenant's profile.
pub struct Settings {
    /// EUR per unit of each accepted currency.
    pub eur_rates: Vec<(String, f64)>,
    /// Orders at or above this many EUR are `large`.
    pub large_order_eur: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            eur_rates: vec![("EUR".into(), 1.0), ("USD".into(), 0.92), ("GBP".into(), 1.17), ("SEK".into(), 0.087)],
            large_order_eur: 500.0,
        }
    }
}

impl Settings {
    /// The settings from the pipeline's parameters in the tenant's profile.
    pub fn from_context(ctx: &BatchContext) -> Result<Self, Error> {
        let mut settings = Settings::default();
        if let Some(rates) = ctx.param("eur_rates") {
            settings.eur_rates = parse_rates(&rates).map_err(|e| Error::invalid_input(format!("parameter `eur_rates` ({rates}): {e}")))?;
        }
        settings.large_order_eur = ctx.param_or("large_order_eur", settings.large_order_eur)?;
        Ok(settings)
    }
}

/// `USD=0.92,GBP=1.17` to pairs.
fn parse_rates(text: &str) -> Result<Vec<(String, f64)>, String> {
    text.split(',')
        .map(|pair| {
            let (code, rate) = pair.split_once('=').ok_or("expected CODE=RATE pairs")?;
            let rate: f64 = rate.trim().parse().map_err(|_| format!("rate of {code} is not a number"))?;
            Ok((code.trim().to_uppercase(), rate))
        })
        .collect()
}

/// The columns, resolved once per file.
pub struct Columns {
    order_id: usize,
    order_date: usize,
    customer_id: usize,
    customer_name: usize,
    country: usize,
    sku: usize,
    product: usize,
    category: usize,
    quantity: usize,
    unit_price: usize,
    discount: usize,
    currency: usize,
}

impl Columns {
    pub fn resolve<S: mysimbdp::ChunkSource>(csv: &CsvReader<S>) -> Result<Self, Error> {
        Ok(Columns {
            order_id: csv.column("order_id")?,
            order_date: csv.column("order_date")?,
            customer_id: csv.column("customer_id")?,
            customer_name: csv.column("customer_name")?,
            country: csv.column("country")?,
            sku: csv.column("sku")?,
            product: csv.column("product")?,
            category: csv.column("category")?,
            quantity: csv.column("quantity")?,
            unit_price: csv.column("unit_price")?,
            discount: csv.column("discount")?,
            currency: csv.column("currency")?,
        })
    }
}

/// An order document. It borrows the row's text where it can: built and
/// serialised once per row, so every allocation saved counts.
#[derive(Debug, Serialize)]
pub struct Order<'r> {
    pub order_id: &'r str,
    pub order_date: &'r str,
    pub weekday: &'static str,
    /// `YYYY-MM` of the order date.
    pub month: &'r str,
    pub customer: Customer<'r>,
    pub item: Item<'r>,
    pub quantity: u32,
    pub unit_price: f64,
    pub discount: f64,
    /// ISO 4217, as the profile's rates spell it.
    pub currency: &'r str,
    pub total: f64,
    pub total_eur: f64,
    /// `small`, `medium` or `large` by the total in EUR.
    pub size: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Customer<'r> {
    pub id: &'r str,
    pub name: &'r str,
    /// ISO 3166 alpha-2, upper case.
    pub country: Cow<'r, str>,
}

#[derive(Debug, Serialize)]
pub struct Item<'r> {
    pub sku: &'r str,
    pub product: &'r str,
    /// Written in lower case.
    pub category: Lower<'r>,
}

/// Text that is written in lower case: kept as read, so a row costs no copy
/// of it (every category arrives capitalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lower<'r>(pub &'r str);

impl<'r> Lower<'r> {
    /// The text in lower case, copied only when it is not already.
    pub fn to_cow(self) -> Cow<'r, str> {
        lower(self.0)
    }
}

impl fmt::Display for Lower<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cow())
    }
}

impl Serialize for Lower<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.0.as_bytes();
        let mut buffer = [0u8; 32];
        if text.len() > buffer.len() || !text.is_ascii() {
            return serializer.serialize_str(&self.to_cow());
        }
        let lowered = &mut buffer[..text.len()];
        for (to, from) in lowered.iter_mut().zip(text) {
            *to = from.to_ascii_lowercase();
        }
        // SAFETY: ASCII in (checked above), ASCII out.
        serializer.serialize_str(unsafe { std::str::from_utf8_unchecked(lowered) })
    }
}

/// One CSV row to an order document, or the reason it is rejected.
pub fn order_document<'r>(row: &Row<'r>, columns: &Columns, settings: &'r Settings) -> Result<Order<'r>, String> {
    let field = |index: usize, name: &'static str| required(row, index, name);
    let order_id = field(columns.order_id, "order_id")?;
    let date = field(columns.order_date, "order_date")?;
    let (year, month, day) = parse_date(date).ok_or_else(|| format!("`order_date` {date:?} is not YYYY-MM-DD"))?;
    let country = field(columns.country, "country")?;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("`country` {:?} is not an ISO 3166 alpha-2 code", country.to_ascii_uppercase()));
    }
    let quantity: u32 =
        field(columns.quantity, "quantity")?.parse().ok().filter(|&q| q > 0).ok_or("`quantity` must be a whole number above 0")?;
    let unit_price: f64 = mysimbdp::parse_f64(field(columns.unit_price, "unit_price")?)
        .filter(|p: &f64| p.is_finite() && *p >= 0.0)
        .ok_or("`unit_price` must be a number of at least 0")?;
    let discount: f64 = match row.field(columns.discount).map(trim) {
        None | Some("") => 0.0,
        Some(text) => {
            mysimbdp::parse_f64(text).filter(|d: &f64| (0.0..1.0).contains(d)).ok_or("`discount` must be a fraction in [0, 1)")?
        }
    };
    let currency = field(columns.currency, "currency")?;
    let (currency, rate) = settings
        .eur_rates
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(currency))
        .map(|(code, rate)| (code.as_str(), *rate))
        .ok_or_else(|| format!("`currency` {} has no EUR rate in the profile", currency.to_ascii_uppercase()))?;

    let total = round2(f64::from(quantity) * unit_price * (1.0 - discount));
    let total_eur = round2(total * rate);
    let size = if total_eur >= settings.large_order_eur {
        "large"
    } else if total_eur >= settings.large_order_eur / 10.0 {
        "medium"
    } else {
        "small"
    };
    Ok(Order {
        order_id,
        order_date: date,
        weekday: WEEKDAYS[weekday(year, month, day)],
        month: &date[..7],
        customer: Customer {
            id: field(columns.customer_id, "customer_id")?,
            name: field(columns.customer_name, "customer_name")?,
            country: upper(country),
        },
        item: Item {
            sku: field(columns.sku, "sku")?,
            product: field(columns.product, "product")?,
            category: Lower(field(columns.category, "category")?),
        },
        quantity,
        unit_price,
        discount,
        currency,
        total,
        total_eur,
        size,
    })
}

/// Field `index` of `row`, trimmed, or why the row is rejected. Inlined (it
/// runs for eight fields of every row), its error path is not.
#[inline(always)]
fn required<'r>(row: &Row<'r>, index: usize, name: &'static str) -> Result<&'r str, String> {
    match row.field(index).map(trim) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(missing(name)),
    }
}

#[cold]
#[inline(never)]
fn missing(name: &str) -> String {
    format!("`{name}` is missing")
}

/// `str::trim`, with a shortcut for the usual field that starts and ends
/// with a visible ASCII character (Unicode white space is never one).
#[inline(always)]
fn trim(text: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    if visible(text.as_bytes().first()) && visible(text.as_bytes().last()) { text } else { text.trim() }
}

/// `text` in upper case, copied only when it is not already.
#[inline(always)]
fn upper(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) { Cow::Owned(text.to_ascii_uppercase()) } else { Cow::Borrowed(text) }
}

/// `text` in lower case, copied only when it is not already; ASCII (the
/// usual category) without Unicode's case tables.
fn lower(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(text.to_ascii_lowercase()) } else { Cow::Borrowed(text) }
    } else if text.chars().any(char::is_uppercase) {
        Cow::Owned(text.to_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

fn round2(value: f64) -> f64 {
    round(value * 100.0) / 100.0
}

/// `f64::round` (half away from zero) from `trunc`, one instruction in wasm
/// (`f64.trunc`), where `round` is a call into the maths library.
/// `value - trunc(value)` is exact: the fraction of a double is a double.
fn round(value: f64) -> f64 {
    let whole = value.trunc();
    if (value - whole).abs() >= 0.5 { whole + value.signum() } else { whole }
}

/// `YYYY-MM-DD` with four, two and two digits, and a day the month has.
fn parse_date(text: &str) -> Option<(i32, u32, u32)> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return None;
    }
    // Digits checked above: their values without `str::parse`.
    let number = |range: std::ops::Range<usize>| b[range].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    let (year, month, day) = (number(0..4) as i32, number(5..7), number(8..10));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    ((1..=12).contains(&month) && day >= 1 && day <= days[month as usize - 1]).then_some((year, month, day))
}

const WEEKDAYS: [&str; 7] = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

/// Sakamoto's method; 0 is Sunday.
#[inline(always)]
fn weekday(year: i32, month: u32, day: u32) -> usize {
    const OFFSETS: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    ((y + y / 4 - y / 100 + y / 400 + OFFSETS[month as usize - 1] + day as i32).rem_euclid(7)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_of_known_dates() {
        assert_eq!(WEEKDAYS[weekday(2026, 11, 21)], "saturday");
        assert_eq!(WEEKDAYS[weekday(2000, 2, 29)], "tuesday");
    }

    #[test]
    fn trim_is_str_trim() {
        for text in ["", " ", "a", " a ", "a b", "\u{a0}a", "a\u{2003}", "\ta\r", "é", " é"] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn lower_is_str_to_lowercase() {
        for text in ["", "gear", "Outerwear", "ACCESSORIES", "Åsa", "ÉTÉ", "straße", "İstanbul", "a1-B2"] {
            assert_eq!(lower(text), text.to_lowercase(), "{text:?}");
            assert_eq!(matches!(lower(text), Cow::Borrowed(_)), text == text.to_lowercase(), "{text:?}");
        }
    }

    #[test]
    fn lower_serialises_as_it_displays() {
        for text in ["Gear", "OUTERWEAR", "gear", "", "ÉTÉ", "Accessories and more accessories, all of them"] {
            let json = serde_json::to_string(&Lower(text)).unwrap();
            assert_eq!(json, serde_json::to_string(&text.to_lowercase()).unwrap(), "{text:?}");
            assert_eq!(Lower(text).to_string(), text.to_lowercase(), "{text:?}");
        }
    }

    #[test]
    fn round_is_f64_round() {
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let special = [0.5, -0.5, 1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994, 4503599627370495.5, 1e300, -0.0, 0.0];
        let random = std::iter::repeat_with(|| {
            let seed = rng.u64(..);
            // Values around whole and half numbers, and any bit pattern.
            [(seed % 2_000_000) as f64 / 2.0 - 500_000.0, f64::from_bits(seed), (seed % 100_000) as f64 * 0.01 * 100.0]
        })
        .take(100_000)
        .flatten();
        for value in special.into_iter().chain(random).chain([f64::INFINITY, f64::NEG_INFINITY, f64::NAN]) {
            let (ours, std) = (round(value), value.round());
            assert!(ours.to_bits() == std.to_bits() || (ours.is_nan() && std.is_nan()), "{value:e}: {ours:e} against {std:e}");
        }
    }

    #[test]
    fn dates_are_checked() {
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("2023-1-01"), None);
        assert_eq!(parse_date("+202-01-01"), None);
    }
}
