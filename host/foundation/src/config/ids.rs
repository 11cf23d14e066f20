use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant id: lowercase letters, digits and `_`, starting with a letter.
///
/// No `-` or `.`: the host builds index names as `<tenant>-<collection>` and
/// topic names as `<tenant>.<topic>`, so the first separator always ends the
/// tenant id and one tenant can never name another tenant's index or topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (2..=32).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(TenantId(text.to_string()))
        } else {
            Err(format!("`{text}` is not a valid tenant id: use 2 to 32 lowercase letters, digits or `_`, starting with a letter"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        TenantId::parse(&text)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a pipeline, collection or topic inside a tenant's namespace:
/// lowercase letters, digits, `_` and `-`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Name(text.to_string()))
        } else {
            Err(format!("`{text}` is not a valid name: use 1 to 64 lowercase letters, digits, `_` or `-`, starting with a letter or digit"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Name::parse(&text)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_cannot_contain_separators() {
        assert!(TenantId::parse("retail").is_ok());
        assert!(TenantId::parse("shop_2").is_ok());
        for bad in ["acme-eu", "acme.eu", "Acme", "1acme", "a", ""] {
            assert!(TenantId::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn names_reject_path_and_case_tricks() {
        assert!(Name::parse("orders-2026").is_ok());
        for bad in ["../x", "Orders", "a.b", "-x", "", "a b"] {
            assert!(Name::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
