//! The attack suite: each test tampers with the SQLite file directly (dropping the triggers,
//! or editing raw bytes) and checks that `verify` detects it, naming the first bad index and
//! the kind of damage. Tests say when the attack needs an externally held checkpoint.
//!
//! The attacker here has the database file but not the appliance key, unless a test says
//! otherwise (then only the external checkpoint can catch a fully re-signed history).

mod common;

use std::path::Path;

use common::{Fixture, config, entry, fill, raw};
use rusqlite::Connection;
use sakshi_audit::{
    ApplianceKey, Checkpoint, Damage, DamageKind, Entry, Frontier, GENESIS_CHAIN, SignedCheckpoint,
    VerifyOptions, VerifyReport, chain_hash, leaf_hash, verify_database,
};

/// A closed log of 1000 entries with checkpoints every 100 (0, 100, ..., 1000).
fn victim() -> Fixture {
    let fx = Fixture::new();
    let log = fx.open(config(100));
    fill(&log, 1000);
    drop(log);
    fx
}

fn verify(fx: &Fixture, external: Vec<SignedCheckpoint>) -> VerifyReport {
    verify_database(
        fx.db(),
        &VerifyOptions {
            trusted_key: Some(fx.key.public_key().clone()),
            external_checkpoints: external,
        },
    )
    .unwrap()
}

fn latest(fx: &Fixture) -> SignedCheckpoint {
    let note: String = raw(&fx.db())
        .query_row(
            "SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    SignedCheckpoint::parse(&note).unwrap()
}

/// What an attacker with SQL access does first.
fn drop_triggers(conn: &Connection) {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for n in names {
        conn.execute_batch(&format!("DROP TRIGGER {n}")).unwrap();
    }
}

/// The attacker recomputes every leaf hash, chain value and stored node from the bodies, so
/// everything that is not signed is self-consistent again.
fn rehash_everything(conn: &Connection) {
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT seq, body FROM entries ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut chain = GENESIS_CHAIN;
    let mut f = Frontier::new();
    let mut up = conn
        .prepare("UPDATE entries SET leaf_hash = ?1, chain = ?2, nodes = ?3 WHERE seq = ?4")
        .unwrap();
    for (seq, body) in rows {
        let leaf = leaf_hash(body.as_bytes());
        chain = chain_hash(&chain, &leaf);
        let mut nodes = Vec::new();
        f.push_with(leaf, |_, _, h| nodes.extend_from_slice(h));
        up.execute(rusqlite::params![&leaf[..], &chain[..], nodes, seq])
            .unwrap();
    }
}

fn set_seq_in_body(body: &str, seq: i64) -> String {
    let mut e = Entry::decode(body.as_bytes()).unwrap();
    e.seq = seq as u64;
    e.canonical().unwrap()
}

fn assert_body_contains(conn: &Connection, seq: i64, text: &str) {
    let body: String = conn
        .query_row("SELECT body FROM entries WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(body.contains(text), "tampering had no effect: {body}");
}

fn headline(r: &VerifyReport) -> Damage {
    r.first_damage()
        .cloned()
        .unwrap_or_else(|| panic!("attack not detected:\n{r}"))
}

#[test]
fn baseline_untampered_log_verifies() {
    let fx = victim();
    let r = verify(&fx, vec![latest(&fx)]);
    assert!(r.is_intact(), "{r}");
    assert_eq!(r.entries_checked, 1000);
    assert_eq!(r.checkpoint_roots_checked, 11);
}

#[test]
fn attack_modify_a_field() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute(
        "UPDATE entries SET body = replace(body, '\"user1\"', '\"mallory\"') WHERE seq = 418",
        [],
    )
    .unwrap();
    assert_body_contains(&conn, 418, "mallory");
    let r = verify(&fx, vec![]);
    assert_eq!(headline(&r), Damage::ModifiedEntry { index: 418 }, "{r}");
    assert_eq!(r.findings_total, 1, "reported once:\n{r}");
    assert!(r.to_string().contains("DAMAGED at index 418"));
}

#[test]
fn attack_modify_a_field_and_recompute_every_unsigned_hash() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute(
        "UPDATE entries SET body = replace(body, '\"user1\"', '\"mallory\"') WHERE seq = 418",
        [],
    )
    .unwrap();
    assert_body_contains(&conn, 418, "mallory");
    rehash_everything(&conn);
    let r = verify(&fx, vec![]);
    // Chain and nodes are consistent again; the signed root of checkpoint 500 is not.
    assert_eq!(
        headline(&r),
        Damage::RootMismatch {
            tree_size: 500,
            from: 400
        },
        "{r}"
    );
    assert_eq!(headline(&r).first_bad_index(), Some(400));
}

#[test]
fn attack_modify_raw_file_bytes() {
    let fx = victim();
    // Fold the WAL into the file, then edit bytes of one entry body in place.
    raw(&fx.db())
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    let mut bytes = std::fs::read(fx.db()).unwrap();
    let needle = br#""details":{"i":733,"#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("entry 733 in the file");
    bytes[at + 16] = b'9'; // 733 -> 933, same length
    std::fs::write(fx.db(), &bytes).unwrap();
    let r = verify(&fx, vec![]);
    assert_eq!(headline(&r), Damage::ModifiedEntry { index: 733 }, "{r}");
}

#[test]
fn attack_delete_an_entry_in_the_middle() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute("DELETE FROM entries WHERE seq = 500", [])
        .unwrap();
    let r = verify(&fx, vec![]);
    assert_eq!(
        headline(&r),
        Damage::MissingEntry {
            index: 500,
            next: 501
        },
        "{r}"
    );
    assert_eq!(r.first_damage().unwrap().kind(), DamageKind::MissingEntry);
}

#[test]
fn attack_delete_an_entry_and_renumber_and_rehash_the_rest() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute("DELETE FROM entries WHERE seq = 500", [])
        .unwrap();
    conn.execute("UPDATE entries SET seq = seq - 1 WHERE seq > 500", [])
        .unwrap();
    rehash_everything(&conn);
    let r = verify(&fx, vec![]);
    // Entry 501 now sits at 500 and says so.
    assert_eq!(
        headline(&r),
        Damage::MisplacedEntry {
            index: 500,
            claimed: 501
        },
        "{r}"
    );
    assert!(r.has(DamageKind::RootMismatch));
}

#[test]
fn attack_reorder_two_entries() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    let b300: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 300", [], |r| r.get(0))
        .unwrap();
    let b301: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 301", [], |r| r.get(0))
        .unwrap();
    conn.execute("UPDATE entries SET body = ?1 WHERE seq = 300", [&b301])
        .unwrap();
    conn.execute("UPDATE entries SET body = ?1 WHERE seq = 301", [&b300])
        .unwrap();
    let r = verify(&fx, vec![]);
    assert_eq!(headline(&r).first_bad_index(), Some(300), "{r}");
    assert!(
        r.has(DamageKind::MisplacedEntry) && r.has(DamageKind::ModifiedEntry),
        "{r}"
    );
}

#[test]
fn attack_reorder_two_entries_rewriting_their_numbers_and_hashes() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    let b300: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 300", [], |r| r.get(0))
        .unwrap();
    let b301: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 301", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "UPDATE entries SET body = ?1 WHERE seq = 300",
        [set_seq_in_body(&b301, 300)],
    )
    .unwrap();
    conn.execute(
        "UPDATE entries SET body = ?1 WHERE seq = 301",
        [set_seq_in_body(&b300, 301)],
    )
    .unwrap();
    rehash_everything(&conn);
    let r = verify(&fx, vec![]);
    assert_eq!(
        headline(&r),
        Damage::RootMismatch {
            tree_size: 400,
            from: 300
        },
        "{r}"
    );
}

#[test]
fn attack_insert_a_forged_entry() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    // Make room at 250 and insert a forged entry there, renumbering and rehashing everything.
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT seq, body FROM entries WHERE seq >= 250 ORDER BY seq DESC")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (seq, body) in rows {
        conn.execute(
            "UPDATE entries SET seq = ?1, body = ?2 WHERE seq = ?3",
            rusqlite::params![seq + 1, set_seq_in_body(&body, seq + 1), seq],
        )
        .unwrap();
    }
    let template: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 249", [], |r| r.get(0))
        .unwrap();
    let mut forged = Entry::decode(template.as_bytes()).unwrap();
    forged.seq = 250;
    forged.actor.id = "root-cause-scapegoat".into();
    conn.execute(
        "INSERT INTO entries (seq, body, leaf_hash, chain, nodes) VALUES (250, ?1, x'', x'', x'')",
        [forged.canonical().unwrap()],
    )
    .unwrap();
    rehash_everything(&conn);
    let r = verify(&fx, vec![]);
    assert_eq!(
        headline(&r),
        Damage::RootMismatch {
            tree_size: 300,
            from: 200
        },
        "{r}"
    );
    // The old final checkpoint (1000) still exists; the log now has 1001 entries.
    assert_eq!(r.log_size, 1001);
}

#[test]
fn attack_truncate_the_tail() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute("DELETE FROM entries WHERE seq >= 950", [])
        .unwrap();
    // Without any external help: the log's own checkpoint at 1000 outlives the entries.
    let r = verify(&fx, vec![]);
    assert_eq!(
        headline(&r),
        Damage::TruncatedTail {
            tree_size: 1000,
            log_size: 950
        },
        "{r}"
    );
}

#[test]
fn attack_truncate_the_tail_with_its_checkpoints_needs_an_external_checkpoint() {
    let fx = victim();
    let external = latest(&fx); // held off the appliance, size 1000
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    conn.execute("DELETE FROM entries WHERE seq >= 950", [])
        .unwrap();
    conn.execute("DELETE FROM checkpoints WHERE tree_size > 900", [])
        .unwrap();
    // The remaining prefix is a consistent, signed log: on its own it verifies.
    let alone = verify(&fx, vec![]);
    assert!(
        alone.is_intact(),
        "a clean prefix cannot be told from a shorter log:\n{alone}"
    );
    assert_eq!(alone.unsigned_tail, 50);
    // The externally held checkpoint exposes it.
    let r = verify(&fx, vec![external]);
    assert_eq!(
        headline(&r),
        Damage::RolledBack {
            tree_size: 1000,
            log_size: 950
        },
        "{r}"
    );
}

/// Delete everything and write a fresh, internally consistent history (bodies, hashes,
/// chain, nodes) of 1000 entries.
fn rebuild_history(conn: &Connection, with_checkpoints_by: Option<&ApplianceKey>) {
    drop_triggers(conn);
    let origin: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let template: String = conn
        .query_row("SELECT body FROM entries WHERE seq = 0", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch("DELETE FROM entries; DELETE FROM checkpoints;")
        .unwrap();
    let mut f = Frontier::new();
    let mut chain = GENESIS_CHAIN;
    let mut prev = None;
    for seq in 0..1000u64 {
        let mut e = Entry::decode(template.as_bytes()).unwrap();
        e.seq = seq;
        e.details = serde_json::json!({ "rewritten": seq });
        let body = e.canonical().unwrap();
        let leaf = leaf_hash(body.as_bytes());
        chain = chain_hash(&chain, &leaf);
        let mut nodes = Vec::new();
        f.push_with(leaf, |_, _, h| nodes.extend_from_slice(h));
        conn.execute(
            "INSERT INTO entries (seq, body, leaf_hash, chain, nodes) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![seq as i64, body, &leaf[..], &chain[..], nodes],
        )
        .unwrap();
        if let Some(key) = with_checkpoints_by
            && (seq + 1) % 100 == 0
        {
            let cp = Checkpoint {
                origin: origin.clone(),
                tree_size: seq + 1,
                root: f.root(),
                time: e.time,
                prev,
            }
            .sign(key)
            .unwrap();
            conn.execute(
                "INSERT INTO checkpoints (id, tree_size, time, note, hash) VALUES (?1, ?2, 't', ?3, ?4)",
                rusqlite::params![(seq / 100) as i64, (seq + 1) as i64, cp.as_str(), &cp.hash()[..]],
            )
            .unwrap();
            prev = Some(cp.hash());
        }
    }
}

#[test]
fn attack_delete_everything_and_rebuild_a_fresh_chain() {
    let fx = victim();
    rebuild_history(&raw(&fx.db()), None);
    let r = verify(&fx, vec![]);
    // Without the key there is nothing signed left.
    assert_eq!(headline(&r), Damage::NoCheckpoint, "{r}");
}

#[test]
fn attack_delete_everything_and_rebuild_with_the_attackers_own_key() {
    let fx = victim();
    let external = latest(&fx);
    let mallory = ApplianceKey::generate().unwrap();
    let conn = raw(&fx.db());
    rebuild_history(&conn, Some(&mallory));
    // The attacker also swaps the public key stored in the log.
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'public_key_pem'",
        [mallory.public_key().to_pem()],
    )
    .unwrap();
    // Against the appliance's real key, every checkpoint is forged.
    let r = verify(&fx, vec![]);
    assert_eq!(
        r.first_damage().unwrap().kind(),
        DamageKind::BadCheckpointSignature,
        "{r}"
    );
    // Trusting only the database itself, the forgery is self-consistent; the externally held
    // checkpoint (signed by the real key) exposes it.
    let r = verify_database(
        fx.db(),
        &VerifyOptions {
            trusted_key: None,
            external_checkpoints: vec![],
        },
    )
    .unwrap();
    assert!(r.is_intact(), "self-consistent forgery:\n{r}");
    let r = verify_database(
        fx.db(),
        &VerifyOptions {
            trusted_key: None,
            external_checkpoints: vec![external],
        },
    )
    .unwrap();
    assert!(r.has(DamageKind::ExternalBadSignature), "{r}");
}

#[test]
fn attack_delete_everything_and_rebuild_even_with_the_stolen_key_needs_an_external_checkpoint() {
    let fx = victim();
    let external = latest(&fx);
    rebuild_history(&raw(&fx.db()), Some(&fx.key));
    let alone = verify(&fx, vec![]);
    assert!(
        alone.is_intact(),
        "a history re-signed with the real key is self-consistent:\n{alone}"
    );
    let r = verify(&fx, vec![external]);
    assert_eq!(
        headline(&r),
        Damage::ExternalMismatch {
            tree_size: 1000,
            from: 0
        },
        "{r}"
    );
}

fn copy_db(from: &Path, to: &Path) {
    raw(from)
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    std::fs::copy(from, to).unwrap();
}

#[test]
fn attack_roll_back_to_an_older_copy_needs_an_external_checkpoint() {
    let fx = Fixture::new();
    let old = fx.dir.path().join("old.db");
    {
        let log = fx.open(config(100));
        fill(&log, 500);
    }
    copy_db(&fx.db(), &old);
    {
        let log = fx.open(config(100));
        for i in 500..1000 {
            log.append(entry(i)).unwrap();
        }
    }
    let external = latest(&fx);
    assert_eq!(external.checkpoint().tree_size, 1000);
    // Roll the file back.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.db().display()));
    }
    std::fs::copy(&old, fx.db()).unwrap();
    let alone = verify(&fx, vec![]);
    assert!(
        alone.is_intact(),
        "an older copy is a valid older log:\n{alone}"
    );
    let r = verify(&fx, vec![external]);
    assert_eq!(
        headline(&r),
        Damage::RolledBack {
            tree_size: 1000,
            log_size: 500
        },
        "{r}"
    );
}

#[test]
fn attack_replace_a_checkpoint_signature() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    // Re-sign checkpoint #5 (size 500) with another key under the same name.
    let note: String = conn
        .query_row("SELECT note FROM checkpoints WHERE id = 5", [], |r| {
            r.get(0)
        })
        .unwrap();
    let cp = SignedCheckpoint::parse(&note).unwrap();
    let mallory = ApplianceKey::generate().unwrap();
    let forged = cp.checkpoint().clone().sign(&mallory).unwrap();
    conn.execute(
        "UPDATE checkpoints SET note = ?1 WHERE id = 5",
        [forged.as_str()],
    )
    .unwrap();
    let r = verify(&fx, vec![]);
    assert!(
        r.findings.contains(&Damage::BadCheckpointSignature {
            position: 5,
            tree_size: 500
        }),
        "{r}"
    );
    // The next checkpoint named the original note's hash.
    assert!(
        r.findings.contains(&Damage::CheckpointChainBroken {
            position: 6,
            tree_size: 600
        }),
        "{r}"
    );
}

#[test]
fn attack_corrupt_a_checkpoint_signature_in_place() {
    let fx = victim();
    let conn = raw(&fx.db());
    drop_triggers(&conn);
    let note: String = conn
        .query_row("SELECT note FROM checkpoints WHERE id = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    // Keep the key id, change one base64 character inside the DER signature.
    let mut lines: Vec<String> = note.lines().map(str::to_owned).collect();
    let last = lines.last_mut().unwrap();
    let pos = last.len() - 12;
    let c = if last.as_bytes()[pos] == b'A' {
        "B"
    } else {
        "A"
    };
    last.replace_range(pos..pos + 1, c);
    let tampered = format!("{}\n", lines.join("\n"));
    conn.execute("UPDATE checkpoints SET note = ?1 WHERE id = 3", [tampered])
        .unwrap();
    let r = verify(&fx, vec![]);
    assert_eq!(
        headline(&r),
        Damage::BadCheckpointSignature {
            position: 3,
            tree_size: 300
        },
        "{r}"
    );
}
