//! Checked identifiers and fields: owners, codes, titles, media types, hashes and dates.
//!
//! Every type here can only be built by the function that validates it ("parse, don't validate"),
//! so the rest of the engine never sees a malformed owner id or an unbounded string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest agency, document type, procedure or dossier code accepted.
pub const CODE_LENGTH_BYTES_MAX: usize = 64;
/// Longest document title accepted, in characters.
pub const TITLE_LENGTH_CHARS_MAX: usize = 512;
/// Longest media type accepted (RFC 6838 limits each part to 127 characters).
pub const MEDIA_TYPE_LENGTH_BYTES_MAX: usize = 255;

/// Why a field was rejected. The message names the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        FieldError { field, reason: reason.into() }
    }
}

/// Province codes that begin a valid 12-digit citizen identification number (Circular 59/2021/TT-BCA,
/// appendix I). A number that starts with anything else was never issued.
const CITIZEN_PROVINCE_CODES: [u16; 63] = [
    1, 2, 4, 6, 8, 10, 11, 12, 14, 15, 17, 19, 20, 22, 24, 25, 26, 27, 30, 31, 33, 34, 35, 36, 37, 38, 40, 42, 44, 45,
    46, 48, 49, 51, 52, 54, 56, 58, 60, 62, 64, 66, 67, 68, 70, 72, 74, 75, 77, 79, 80, 82, 83, 84, 86, 87, 89, 91, 92,
    93, 94, 95, 96,
];

/// What [`OwnerId::parse`] accepts, as a regular expression in the syntax ECMA-262 (OpenAPI's) and Rust's
/// `regex` share: 10 or 13 digits, or 12 starting with a province code.
pub fn owner_id_pattern() -> String {
    let provinces: Vec<String> = CITIZEN_PROVINCE_CODES.iter().map(|code| format!("{code:03}")).collect();
    format!("^([0-9]{{10}}|[0-9]{{13}}|({})[0-9]{{9}})$", provinces.join("|"))
}

/// What [`Code::parse`] accepts, as a regular expression (see [`owner_id_pattern`]).
pub fn code_pattern() -> String {
    format!("^[A-Za-z0-9._/-]{{1,{CODE_LENGTH_BYTES_MAX}}}$")
}

/// What [`Title::parse`] accepts but its length, as a regular expression (see [`owner_id_pattern`]): no
/// control character (Unicode's Cc) and at least one character that is neither a control nor white
/// space (Unicode's White_Space, which `str::trim` removes).
pub const TITLE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$";

/// What [`Digest::parse_hex`] accepts, as a regular expression (see [`owner_id_pattern`]).
pub const DIGEST_HEX_PATTERN: &str = "^[0-9A-Fa-f]{64}$";

/// The owner of a store: a citizen (12-digit personal identification number) or an organization
/// (10-digit enterprise/tax code, or 13 digits for a branch unit).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerId(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Citizen,
    Organization,
}

impl OwnerId {
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let field = "owner id";
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(field, format!("{text:?} must contain only digits")));
        }
        match text.len() {
            12 => {
                let province: u16 = text[..3].parse().map_err(|_| FieldError::new(field, "bad province code"))?;
                if !CITIZEN_PROVINCE_CODES.contains(&province) {
                    return Err(FieldError::new(
                        field,
                        format!("{text:?} starts with {:03}, which is not a province code", province),
                    ));
                }
                Ok(OwnerId(text.to_owned()))
            }
            10 | 13 => Ok(OwnerId(text.to_owned())),
            n => Err(FieldError::new(
                field,
                format!("{text:?} has {n} digits; expected 12 (citizen) or 10 or 13 (organization)"),
            )),
        }
    }

    pub fn kind(&self) -> OwnerKind {
        if self.0.len() == 12 {
            OwnerKind::Citizen
        } else {
            OwnerKind::Organization
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A code from an administrative catalogue: agency, document type, procedure or dossier.
///
/// Codes are 1 to [`CODE_LENGTH_BYTES_MAX`] characters of ASCII letters, digits and `. - _ /`, as the
/// national catalogues use (`000.00.00.G01`, `G22.99-230415-0001`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Code(String);

impl Code {
    pub fn parse(field: &'static str, text: &str) -> Result<Self, FieldError> {
        if text.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if text.len() > CODE_LENGTH_BYTES_MAX {
            return Err(FieldError::new(
                field,
                format!("{} characters is longer than the limit of {CODE_LENGTH_BYTES_MAX}", text.len()),
            ));
        }
        if let Some(bad) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-/".contains(*c))) {
            return Err(FieldError::new(
                field,
                format!("{text:?} contains {bad:?}; only ASCII letters, digits and . _ - / are allowed"),
            ));
        }
        Ok(Code(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A human-readable title: 1 to [`TITLE_LENGTH_CHARS_MAX`] characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Title(String);

impl Title {
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let count = text.chars().count();
        if text.trim().is_empty() {
            return Err(FieldError::new("title", "must not be empty"));
        }
        if count > TITLE_LENGTH_CHARS_MAX {
            return Err(FieldError::new(
                "title",
                format!("{count} characters is longer than the limit of {TITLE_LENGTH_CHARS_MAX}"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(FieldError::new("title", "must not contain control characters"));
        }
        Ok(Title(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A media type such as `application/pdf`, lower-cased, without parameters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaType(String);

impl MediaType {
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let field = "media type";
        let restricted = |part: &str| {
            !part.is_empty()
                && part.len() <= 127
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "!#$&-^_.+".contains(c))
        };
        let valid = text.len() <= MEDIA_TYPE_LENGTH_BYTES_MAX
            && matches!(text.split_once('/'), Some((kind, sub)) if restricted(kind) && restricted(sub));
        if !valid {
            return Err(FieldError::new(
                field,
                format!("{text:?} is not a lower-case type/subtype such as application/pdf"),
            ));
        }
        Ok(MediaType(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A best guess from a file name's extension, for CLI convenience; records state it explicitly.
    pub fn guess_from_path(path: &std::path::Path) -> MediaType {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let text = match extension.as_str() {
            "pdf" => "application/pdf",
            "xml" => "application/xml",
            "json" => "application/json",
            "txt" => "text/plain",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "tif" | "tiff" => "image/tiff",
            "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            _ => "application/octet-stream",
        };
        MediaType(text.to_owned())
    }
}

macro_rules! string_newtype_impls {
    ($($name:ident => $parse:expr),* $(,)?) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                let parse: fn(&str) -> Result<$name, FieldError> = $parse;
                parse(&value)
            }
        }
    )*};
}

string_newtype_impls! {
    OwnerId => OwnerId::parse,
    Code => |text| Code::parse("code", text),
    Title => Title::parse,
    MediaType => MediaType::parse,
}

impl FromStr for OwnerId {
    type Err = FieldError;
    fn from_str(text: &str) -> Result<Self, FieldError> {
        OwnerId::parse(text)
    }
}

/// A 32-byte digest shown as lower-case hex. Used for BLAKE3 content addresses, SHA-256 content
/// hashes, and statement ids (SHA-256 of a statement's signed bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn parse_hex(field: &'static str, text: &str) -> Result<Self, FieldError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| FieldError::new(field, format!("{text:?} is not 64 hexadecimal digits")))?;
        Ok(Digest(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn sha256(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// A calendar date (issue date, validity window), encoded as the integer YYYYMMDD.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(time::Date);

impl Date {
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .map(Date)
            .map_err(|_| FieldError::new("date", format!("{text:?} is not a calendar date YYYY-MM-DD")))
    }

    pub fn from_yyyymmdd(value: u32) -> Result<Self, FieldError> {
        let bad = || FieldError::new("date", format!("{value} is not a calendar date YYYYMMDD"));
        let year = i32::try_from(value / 10_000).map_err(|_| bad())?;
        let month = u8::try_from(value / 100 % 100).map_err(|_| bad())?;
        let month = time::Month::try_from(month).map_err(|_| bad())?;
        let day = u8::try_from(value % 100).map_err(|_| bad())?;
        if !(1000..=9999).contains(&year) {
            return Err(bad());
        }
        time::Date::from_calendar_date(year, month, day).map(Date).map_err(|_| bad())
    }

    pub fn to_yyyymmdd(self) -> u32 {
        // Years are limited to 1000..=9999 by every constructor, so this cannot overflow.
        self.0.year().unsigned_abs() * 10_000 + u32::from(u8::from(self.0.month())) * 100 + u32::from(self.0.day())
    }

    /// The calendar date at `unix_ms` in a zone `utc_offset_minutes` east of UTC.
    pub fn at(unix_ms: i64, utc_offset_minutes: i16) -> Date {
        let shifted = unix_ms.div_euclid(1000) + i64::from(utc_offset_minutes) * 60;
        let days = shifted.div_euclid(86_400);
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap_or(time::Date::MIN);
        let date = epoch.checked_add(time::Duration::days(days)).unwrap_or(time::Date::MAX);
        Date(date)
    }
}

impl From<Date> for String {
    fn from(value: Date) -> String {
        value.to_string()
    }
}

impl TryFrom<String> for Date {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, FieldError> {
        Date::parse(&value)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), u8::from(self.0.month()), self.0.day())
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({self})")
    }
}

/// Milliseconds since the Unix epoch, UTC, from the system clock.
pub fn now_unix_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A Unix millisecond timestamp as RFC 3339, for people.
pub fn format_unix_ms(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pattern matches exactly the texts its parser accepts, so a client that follows the OpenAPI
    /// document is never refused and one that does not always is.
    #[test]
    fn the_published_patterns_accept_exactly_what_the_parsers_accept() {
        let agree = |pattern: &str, parses: &dyn Fn(&str) -> bool, texts: &mut dyn Iterator<Item = String>| {
            let regex = regex::Regex::new(pattern).expect("pattern compiles");
            let mut checked = 0;
            for text in texts {
                assert_eq!(regex.is_match(&text), parses(&text), "{pattern} on {text:?}");
                checked += 1;
            }
            checked
        };
        let owners =
            (0..1000).flat_map(|prefix| (9..=14).map(move |length| format!("{prefix:03}{}", "7".repeat(length - 3))));
        let odd_owners =
            ["", "00120401234a", " 001204012345", "001204012345\n", "１２３４５６７８９０"].map(String::from);
        let checked = agree(&owner_id_pattern(), &|text| OwnerId::parse(text).is_ok(), &mut owners.chain(odd_owners));
        assert!(checked > 6000);
        let characters: Vec<char> = (0u8..=127).map(char::from).chain(['é', 'Đ', '\u{a0}']).collect();
        let codes = characters.iter().map(|c| format!("H26{c}1")).chain([
            String::new(),
            "A".repeat(CODE_LENGTH_BYTES_MAX),
            "A".repeat(CODE_LENGTH_BYTES_MAX + 1),
        ]);
        agree(&code_pattern(), &|text| Code::parse("code", text).is_ok(), &mut codes.collect::<Vec<_>>().into_iter());
        let spaces = ['\t', '\n', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{3000}'];
        let others = ['a', 'Đ', '\u{0}', '\u{1f}', '\u{7f}', '\u{9f}', '\u{feff}', '\u{200b}', '\u{1f600}'];
        let titles = spaces
            .iter()
            .chain(&others)
            .flat_map(|first| spaces.iter().chain(&others).map(move |second| format!("{first}{second}")));
        let titles = titles.chain([String::new(), " Giấy khai sinh ".into(), "x\ty".into()]);
        agree(TITLE_PATTERN, &|text| Title::parse(text).is_ok(), &mut titles.collect::<Vec<_>>().into_iter());
        let hex = ["0".repeat(64), "aF".repeat(32), "g".repeat(64), "0".repeat(63), "0".repeat(65), String::new()];
        agree(DIGEST_HEX_PATTERN, &|text| Digest::parse_hex("id", text).is_ok(), &mut hex.into_iter());
    }

    #[test]
    fn owner_ids_are_checked() {
        assert_eq!(OwnerId::parse("001204012345").map(|o| o.kind()), Ok(OwnerKind::Citizen));
        assert_eq!(OwnerId::parse("0101234567").map(|o| o.kind()), Ok(OwnerKind::Organization));
        assert_eq!(OwnerId::parse("0101234567001").map(|o| o.kind()), Ok(OwnerKind::Organization));
        assert!(OwnerId::parse("003204012345").is_err(), "003 is not a province code");
        assert!(OwnerId::parse("00120401234").is_err(), "11 digits");
        assert!(OwnerId::parse("00120401234a").is_err());
        assert!(OwnerId::parse("").is_err());
        assert!(OwnerId::parse(" 001204012345").is_err());
    }

    #[test]
    fn codes_titles_and_media_types_are_checked() {
        assert!(Code::parse("agency", "000.00.00.G01").is_ok());
        assert!(Code::parse("agency", "").is_err());
        assert!(Code::parse("agency", "G01 H02").is_err());
        assert!(Code::parse("agency", &"A".repeat(CODE_LENGTH_BYTES_MAX + 1)).is_err());
        assert!(Title::parse("Giấy khai sinh").is_ok());
        assert!(Title::parse("  ").is_err());
        assert!(Title::parse("a\nb").is_err());
        assert!(MediaType::parse("application/pdf").is_ok());
        assert!(MediaType::parse("application/vnd.openxmlformats-officedocument.wordprocessingml.document").is_ok());
        assert!(MediaType::parse("Application/PDF").is_err());
        assert!(MediaType::parse("pdf").is_err());
        assert!(MediaType::parse("text/plain; charset=utf-8").is_err());
    }

    #[test]
    fn dates_round_trip_and_reject_impossible_days() {
        let date = Date::parse("2024-02-29").expect("leap day");
        assert_eq!(date.to_yyyymmdd(), 20240229);
        assert_eq!(Date::from_yyyymmdd(20240229), Ok(date));
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::from_yyyymmdd(20231301).is_err());
        assert!(Date::from_yyyymmdd(0).is_err());
        // 2024-01-01T17:00:00Z is already 2024-01-02 in Vietnam (UTC+7).
        let ms = 1_704_128_400_000;
        assert_eq!(Date::at(ms, 0).to_string(), "2024-01-01");
        assert_eq!(Date::at(ms, 420).to_string(), "2024-01-02");
    }
}
