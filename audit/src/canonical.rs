//! The canonical encoding of entries: RFC 8785 (JCS) JSON, written by hand for the fixed
//! envelope (keys in sorted order, no whitespace) with the free-form `details` canonicalised
//! by a generic RFC 8785 serialiser. Unit tests in `entry.rs` check the hand-written form
//! against the generic serialiser.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::entry::{
    ENTRY_FORMAT_VERSION, InvalidEntry, MAX_DETAILS_BYTES, NewEntry, Origin, Outcome, format_time,
};

/// A validated entry with its canonical details, prepared on the caller's thread.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone)]
pub(crate) struct PreparedEntry {
    pub(crate) entry: NewEntry,
    pub(crate) details: String,
}

#[cfg(feature = "sqlite")]
impl PreparedEntry {
    pub(crate) fn new(entry: NewEntry) -> Result<Self, InvalidEntry> {
        let details = checked_details(&entry)?;
        Ok(PreparedEntry { entry, details })
    }
}

/// Check the entry's fields and return its canonical details.
pub(crate) fn checked_details(entry: &NewEntry) -> Result<String, InvalidEntry> {
    entry.check_fields()?;
    let details = canonical_details(&entry.details)?;
    if details.len() > MAX_DETAILS_BYTES {
        return Err(InvalidEntry::DetailsTooLarge { len: details.len() });
    }
    Ok(details)
}

/// RFC 8785 form of `details` (`null` when absent).
pub(crate) fn canonical_details(details: &serde_json::Value) -> Result<String, InvalidEntry> {
    if details.is_null() {
        return Ok("null".to_owned());
    }
    serde_json_canonicalizer::to_string(details)
        .map_err(|e| InvalidEntry::Canonicalize(std::sync::Arc::new(e)))
}

/// Append `s` as a JSON string as RFC 8785 section 3.2.2.2 requires: only `"`, `\` and the
/// control characters are escaped; five of those have short forms, the rest use `\u00xx`.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The canonical bytes of the entry `new` becomes at `seq` and `time`; `details` must already
/// be canonical.
pub(crate) fn encode(new: &NewEntry, details: &str, seq: u64, time: &DateTime<Utc>) -> String {
    let mut o = String::with_capacity(320 + details.len());
    o.push_str("{\"action\":");
    push_str(&mut o, new.action.as_str());
    o.push_str(",\"actor\":{\"auth\":");
    push_str(&mut o, new.actor.auth.as_str());
    o.push_str(",\"id\":");
    push_str(&mut o, &new.actor.id);
    o.push_str(",\"kind\":");
    push_str(&mut o, new.actor.kind.as_str());
    o.push_str("},\"details\":");
    o.push_str(details);
    o.push_str(",\"origin\":");
    match &new.origin {
        Origin::Ip { addr } => {
            o.push_str("{\"addr\":");
            push_str(&mut o, &addr.to_string());
            o.push_str(",\"kind\":\"ip\"}");
        }
        Origin::LocalSocket { path, peer_uid } => {
            o.push_str("{\"kind\":\"local_socket\",\"path\":");
            push_str(&mut o, path);
            match peer_uid {
                Some(u) => {
                    let _ = write!(o, ",\"peer_uid\":{u}}}");
                }
                None => o.push_str(",\"peer_uid\":null}"),
            }
        }
        Origin::Internal => o.push_str("{\"kind\":\"internal\"}"),
    }
    o.push_str(",\"outcome\":");
    match &new.outcome {
        Outcome::Success => o.push_str("{\"result\":\"success\"}"),
        Outcome::Failure { reason } => {
            o.push_str("{\"reason\":");
            push_str(&mut o, reason);
            o.push_str(",\"result\":\"failure\"}");
        }
    }
    let _ = write!(o, ",\"seq\":{seq},\"target\":");
    match &new.target {
        Some(t) => {
            o.push_str("{\"id\":");
            push_str(&mut o, &t.id);
            o.push_str(",\"kind\":");
            push_str(&mut o, t.kind.as_str());
            o.push('}');
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"time\":");
    push_str(&mut o, &format_time(time));
    o.push_str(",\"trace_id\":");
    match &new.trace_id {
        Some(t) => push_str(&mut o, &t.to_string()),
        None => o.push_str("null"),
    }
    let _ = write!(o, ",\"v\":{ENTRY_FORMAT_VERSION},\"vm_seq\":");
    match new.vm_seq {
        Some(v) => {
            let _ = write!(o, "{v}");
        }
        None => o.push_str("null"),
    }
    o.push('}');
    o
}

/// The sequence number an encoded entry claims, read without parsing the whole entry: the
/// last structural `,"seq":` (a `"` inside a JSON string is always escaped, and every key
/// after the top-level `seq` has a fixed shape). `None` if absent or not a number.
pub(crate) fn claimed_seq(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b",\"seq\":";
    // Scan backwards for the ':' that ends the key; the tail after `seq` is short.
    let mut i = body.len();
    while i > KEY.len() {
        i -= 1;
        if body[i] == b':' && body[i + 1 - KEY.len()..=i] == *KEY {
            let rest = &body[i + 1..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || digits > 16 {
                return None;
            }
            return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        }
    }
    None
}
