//! VM ids and W3C trace ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The id of one VM: a random UUID, shown hyphenated (36 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(uuid::Uuid);

impl VmId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A string that is not a VM id.
#[derive(Debug, thiserror::Error)]
#[error("not a VM id (expected a hyphenated UUID)")]
pub struct ParseVmIdError(#[source] uuid::Error);

impl FromStr for VmId {
    type Err = ParseVmIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(Self).map_err(ParseVmIdError)
    }
}

impl Serialize for VmId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VmId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A W3C Trace Context trace id: 16 bytes, shown as 32 lowercase hex digits, never all zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> Self {
        // A v4 UUID has 122 random bits and is never all zero.
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// A trace id from its bytes (the caller ensures they are not all zero).
    pub(crate) const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A string that is not a W3C trace id.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseTraceIdError {
    /// Not 32 lowercase hex digits.
    #[error("a trace id is 32 lowercase hex digits")]
    Format,
    /// All zero, which W3C Trace Context declares invalid.
    #[error("the all-zero trace id is invalid")]
    AllZero,
}

impl FromStr for TraceId {
    type Err = ParseTraceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseTraceIdError::Format);
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseTraceIdError::Format)?;
        if bytes == [0; 16] {
            return Err(ParseTraceIdError::AllZero);
        }
        Ok(Self(bytes))
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_round_trips_and_is_w3c_shaped() {
        let t = TraceId::random();
        let s = t.to_string();
        assert_eq!(s.len(), 32);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(s.parse::<TraceId>().unwrap(), t);
        assert_ne!(TraceId::random(), t);
    }

    #[test]
    fn trace_id_rejects_bad_input() {
        assert_eq!(
            "0".repeat(32).parse::<TraceId>(),
            Err(ParseTraceIdError::AllZero)
        );
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "4bf92f3577b34da6a3ce929d0e0e47361",
        ] {
            assert_eq!(
                bad.parse::<TraceId>(),
                Err(ParseTraceIdError::Format),
                "{bad}"
            );
        }
    }

    #[test]
    fn vm_id_round_trips() {
        let id = VmId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s.parse::<VmId>().unwrap(), id);
        assert!("not-an-id".parse::<VmId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<VmId>(&json).unwrap(), id);
    }
}
