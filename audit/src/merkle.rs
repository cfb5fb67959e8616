//! RFC 9162 Merkle tree hashing, proofs and their verification, plus the hash chain.
//!
//! - leaf hash: `SHA-256(0x00 || entry)`; interior node: `SHA-256(0x01 || left || right)`;
//!   empty tree: `SHA-256("")` (RFC 9162 section 2.1.1).
//! - hash chain: `chain[i] = SHA-256(chain[i-1] || leaf_hash[i])`, `chain[-1]` = 32 zero bytes.
//! - inclusion and consistency proofs exactly as RFC 9162 sections 2.1.3 and 2.1.4.
//! - range proofs (for exports): the compact-range hashes left and right of a run of leaves.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The chain value "before" entry 0.
pub const GENESIS_CHAIN: Hash = [0u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// `SHA-256(prev_chain || leaf_hash)`.
pub fn chain_hash(prev: &Hash, leaf: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(prev);
    buf[32..].copy_from_slice(leaf);
    Sha256::digest(buf).into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up the tree of `size` leaves: the "frontier" or compact
/// range `[0, size)`. Appending a leaf costs one leaf hash plus, amortised, one node hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, highest level first.
    nodes: Vec<Hash>,
}

/// Frontier parts that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    /// `nodes.len()` must equal the number of set bits of the size.
    #[error("a frontier of size {size} has {expected} nodes, got {got}")]
    WrongNodeCount {
        /// Tree size.
        size: u64,
        /// Set bits of the size.
        expected: usize,
        /// Nodes given.
        got: usize,
    },
    /// A subtree of this level cannot start at this size.
    #[error("a level-{level} subtree cannot be appended at tree size {size}")]
    Misaligned {
        /// Subtree level.
        level: u32,
        /// Current size.
        size: u64,
    },
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild a frontier from its size and node hashes (highest level first).
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones() as usize;
        if nodes.len() != expected {
            return Err(FrontierError::WrongNodeCount {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree hashes, highest level first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Append a leaf hash; `completed(level, index, hash)` is called for every interior node
    /// (level >= 1) that this leaf completes, lowest level first.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut h = leaf;
        let mut level = 0u32;
        let next = self.size + 1;
        while (self.size >> level) & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit has a node");
            h = node_hash(&left, &h);
            level += 1;
            completed(level, (next >> level) - 1, &h);
        }
        self.nodes.push(h);
        self.size = next;
    }

    /// Append a whole perfect subtree of `2^level` leaves. The current size must be a
    /// multiple of `2^level`.
    pub fn push_subtree(&mut self, level: u32, hash: Hash) -> Result<(), FrontierError> {
        if level >= 63 || (self.size & ((1u64 << level) - 1)) != 0 {
            return Err(FrontierError::Misaligned {
                level,
                size: self.size,
            });
        }
        let mut h = hash;
        let mut l = level;
        while (self.size >> l) & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit has a node");
            h = node_hash(&left, &h);
            l += 1;
        }
        self.nodes.push(h);
        self.size += 1u64 << level;
        Ok(())
    }

    /// The RFC 9162 root hash of the tree of `size()` leaves.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, n| node_hash(n, &acc)),
        }
    }
}

/// Where proof generation reads perfect-subtree hashes from.
pub trait NodeSource {
    /// Error reading a node.
    type Error;
    /// The hash of the perfect subtree at `level` covering leaves
    /// `[index * 2^level, (index + 1) * 2^level)`; level 0 is the leaf hash.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// An in-memory tree over leaf hashes; computes nodes on demand (tests, small exports).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// A tree over these leaf hashes.
    pub fn new(leaves: Vec<Hash>) -> Self {
        MemoryTree { leaves }
    }
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
    /// Root at the given size (`<= size()`).
    pub fn root_at(&self, size: u64) -> Hash {
        let mut f = Frontier::new();
        for l in &self.leaves[..size as usize] {
            f.push(*l);
        }
        f.root()
    }
}

/// A node outside a [`MemoryTree`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no node at level {level} index {index}")]
pub struct MissingNode {
    /// Level.
    pub level: u32,
    /// Index.
    pub index: u64,
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;
    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        let missing = MissingNode { level, index };
        let width = 1u64.checked_shl(level).ok_or(missing.clone())?;
        let start = index.checked_mul(width).ok_or(missing.clone())?;
        let end = start.checked_add(width).ok_or(missing.clone())?;
        if end > self.size() {
            return Err(missing);
        }
        let mut f = Frontier::new();
        for l in &self.leaves[start as usize..end as usize] {
            f.push(*l);
        }
        Ok(f.root())
    }
}

/// Errors while building a proof.
#[derive(Debug, thiserror::Error)]
pub enum ProofBuildError<E: std::error::Error + 'static> {
    /// The requested index or sizes are out of range.
    #[error("invalid proof request: {0}")]
    OutOfRange(&'static str),
    /// Reading a node failed.
    #[error("reading a tree node failed")]
    Source(#[source] E),
}

/// The RFC 9162 hash of the subtree over leaves `[start, end)`, where `start` is a multiple
/// of the largest power of two below `end - start` (true of every subtree RFC 9162 uses).
pub fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return src.node(level, start >> level);
    }
    let k = split_point(n);
    let left = range_hash(src, start, start + k)?;
    let right = range_hash(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// RFC 9162 inclusion proof (audit path) for leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofBuildError<S::Error>>
where
    S: NodeSource,
    S::Error: std::error::Error + 'static,
{
    if index >= size {
        return Err(ProofBuildError::OutOfRange(
            "leaf index must be below the tree size",
        ));
    }
    let mut out = Vec::new();
    let (mut start, mut end) = (0u64, size);
    // Walk from the root down, collecting siblings; reverse at the end (leaf first).
    while end - start > 1 {
        let k = split_point(end - start);
        if index < start + k {
            out.push(range_hash(src, start + k, end).map_err(ProofBuildError::Source)?);
            end = start + k;
        } else {
            out.push(range_hash(src, start, start + k).map_err(ProofBuildError::Source)?);
            start += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// RFC 9162 consistency proof between the trees of `old_size` and `new_size` leaves.
pub fn consistency_proof<S>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofBuildError<S::Error>>
where
    S: NodeSource,
    S::Error: std::error::Error + 'static,
{
    if old_size > new_size {
        return Err(ProofBuildError::OutOfRange(
            "old size must not exceed the new size",
        ));
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:end], b), iteratively; collected top-down, reversed at the end.
    let mut out = Vec::new();
    let (mut start, mut end, mut m, mut b) = (0u64, new_size, old_size, true);
    loop {
        let n = end - start;
        if m == n {
            if !b {
                out.push(range_hash(src, start, end).map_err(ProofBuildError::Source)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push(range_hash(src, start + k, end).map_err(ProofBuildError::Source)?);
            end = start + k;
        } else {
            out.push(range_hash(src, start, start + k).map_err(ProofBuildError::Source)?);
            start += k;
            m -= k;
            b = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are impossible.
    #[error("proof parameters are out of range")]
    OutOfRange,
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The recomputed root differs from the expected root.
    #[error("recomputed root {computed} does not match the expected root")]
    RootMismatch {
        /// Hex of the recomputed root.
        computed: String,
    },
}

/// Verify an RFC 9162 inclusion proof (section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(index, size, leaf, proof)?;
    if &computed != root {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(computed),
        });
    }
    Ok(())
}

/// The root implied by an inclusion proof.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Verify an RFC 9162 consistency proof (section 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange);
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_root != new_root {
            return Err(ProofError::RootMismatch {
                computed: hex::encode(old_root),
            });
        }
        return Ok(());
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(fr),
        });
    }
    if &sr != new_root {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(sr),
        });
    }
    Ok(())
}

/// Proof that a contiguous run of leaves `[start, start + n)` belongs to the tree of
/// `tree_size` leaves: the compact-range hashes of `[0, start)` (highest level first) and of
/// `[start + n, tree_size)` (left to right).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RangeProof {
    /// Frontier of `[0, start)`.
    #[serde(with = "hex_hashes")]
    pub left: Vec<Hash>,
    /// Aligned perfect subtrees covering `[end, tree_size)`.
    #[serde(with = "hex_hashes")]
    pub right: Vec<Hash>,
}

/// Greedy decomposition of `[from, to)` into aligned perfect subtrees: `(level, index)`.
fn right_decomposition(from: u64, to: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut p = from;
    while p < to {
        let align = if p == 0 { 63 } else { p.trailing_zeros() };
        let fit = 63 - (to - p).leading_zeros();
        let level = align.min(fit);
        out.push((level, p >> level));
        p += 1u64 << level;
    }
    out
}

/// Build a [`RangeProof`] for leaves `[start, end)` in the tree of `tree_size` leaves.
pub fn range_proof<S>(
    src: &S,
    start: u64,
    end: u64,
    tree_size: u64,
) -> Result<RangeProof, ProofBuildError<S::Error>>
where
    S: NodeSource,
    S::Error: std::error::Error + 'static,
{
    if start > end || end > tree_size {
        return Err(ProofBuildError::OutOfRange(
            "need start <= end <= tree size",
        ));
    }
    let mut left = Vec::new();
    for level in (0..64u32).rev() {
        if (start >> level) & 1 == 1 {
            let covered = (start >> (level + 1)) << (level + 1);
            left.push(
                src.node(level, covered >> level)
                    .map_err(ProofBuildError::Source)?,
            );
        }
    }
    let mut right = Vec::new();
    for (level, index) in right_decomposition(end, tree_size) {
        right.push(src.node(level, index).map_err(ProofBuildError::Source)?);
    }
    Ok(RangeProof { left, right })
}

/// The root implied by a run of leaf hashes starting at `start` and a [`RangeProof`].
pub fn root_from_range(
    start: u64,
    leaves: &[Hash],
    tree_size: u64,
    proof: &RangeProof,
) -> Result<Hash, ProofError> {
    let end = start
        .checked_add(leaves.len() as u64)
        .ok_or(ProofError::OutOfRange)?;
    if end > tree_size {
        return Err(ProofError::OutOfRange);
    }
    let mut f =
        Frontier::from_parts(start, proof.left.clone()).map_err(|_| ProofError::WrongLength)?;
    for l in leaves {
        f.push(*l);
    }
    let parts = right_decomposition(end, tree_size);
    if parts.len() != proof.right.len() {
        return Err(ProofError::WrongLength);
    }
    for ((level, _), h) in parts.iter().zip(&proof.right) {
        f.push_subtree(*level, *h)
            .map_err(|_| ProofError::WrongLength)?;
    }
    Ok(f.root())
}

/// Serde helpers: a list of SHA-256 hashes as an array of lowercase hex strings
/// (`#[serde(with = "hex_hashes")]`).
pub mod hex_hashes {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    /// Serializes as hex.
    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&hex::encode(h))?;
        }
        seq.end()
    }

    /// Deserializes from hex; a wrong length or a non-hex digit is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

/// Serde helpers: one SHA-256 hash as a lowercase hex string (`#[serde(with = "hex_hash")]`).
pub mod hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as hex.
    pub fn serialize<S: Serializer>(v: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Deserializes from hex; a wrong length or a non-hex digit is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! Known-answer vectors: the 8-leaf tree, its roots, and the inclusion/consistency
    //! proofs from transparency-dev/merkle `proof/verify_test.go` (Apache-2.0), which carry
    //! the vectors of the Certificate Transparency C++ implementation
    //! (google/certificate-transparency `cpp/merkletree/merkle_tree_test.cc`) for RFC 6962,
    //! whose hashing RFC 9162 keeps. In those sources the inclusion `leaf` field is 1-based.
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (0-based leaf index, tree size, proof)
    fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (0, 1, vec![]),
            (
                0,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                5,
                8,
                vec![
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                3,
                vec![h(
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                )],
            ),
            (
                1,
                5,
                vec![
                    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
            (
                6,
                7,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
        ]
    }

    fn tree() -> MemoryTree {
        MemoryTree::new(
            LEAVES
                .iter()
                .map(|l| leaf_hash(&hex::decode(l).unwrap()))
                .collect(),
        )
    }

    #[test]
    fn kat_empty_tree_root() {
        assert_eq!(
            hex::encode(Frontier::new().root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn kat_roots_for_every_size() {
        let t = tree();
        for (i, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                hex::encode(t.root_at(i as u64 + 1)),
                *want,
                "size {}",
                i + 1
            );
        }
    }

    #[test]
    fn kat_inclusion_proofs_generate_and_verify() {
        let t = tree();
        for (index, size, want) in inclusion_vectors() {
            let got = inclusion_proof(&t, index, size).unwrap();
            assert_eq!(got, want, "index {index} size {size}");
            let leaf = t.node(0, index).unwrap();
            let root = h(ROOTS[size as usize - 1]);
            verify_inclusion(index, size, &leaf, &want, &root).unwrap();
            // Corruptions must fail.
            assert!(verify_inclusion(index + 1, size, &leaf, &want, &root).is_err());
            assert!(verify_inclusion(index, size * 2, &leaf, &want, &root).is_err());
            let mut extended = want.clone();
            extended.push(root);
            assert!(verify_inclusion(index, size, &leaf, &extended, &root).is_err());
            for i in 0..want.len() {
                let mut bad = want.clone();
                bad[i][0] ^= 8;
                assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
            }
            if !want.is_empty() {
                assert!(
                    verify_inclusion(index, size, &leaf, &want[..want.len() - 1], &root).is_err()
                );
            }
        }
    }

    #[test]
    fn kat_consistency_proofs_generate_and_verify() {
        let t = tree();
        for (m, n, want) in consistency_vectors() {
            let got = consistency_proof(&t, m, n).unwrap();
            assert_eq!(got, want, "{m} -> {n}");
            let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[n as usize - 1]));
            verify_consistency(m, n, &r1, &r2, &want).unwrap();
            if !want.is_empty() {
                assert!(
                    verify_consistency(m, n, &r2, &r1, &want).is_err(),
                    "swapped roots"
                );
                assert!(
                    verify_consistency(m, n, &r1, &r2, &[]).is_err(),
                    "empty proof"
                );
                assert!(verify_consistency(m, n, &r1, &r2, &want[..want.len() - 1]).is_err());
                for i in 0..want.len() {
                    let mut bad = want.clone();
                    bad[i][0] ^= 16;
                    assert!(verify_consistency(m, n, &r1, &r2, &bad).is_err());
                }
            }
        }
    }

    #[test]
    fn all_proofs_round_trip_on_larger_trees() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let t = MemoryTree::new(leaves.clone());
        for size in 1..=70u64 {
            let root = t.root_at(size);
            for index in 0..size {
                let p = inclusion_proof(&t, index, size).unwrap();
                verify_inclusion(index, size, &leaves[index as usize], &p, &root).unwrap();
            }
            for old in 0..=size {
                let p = consistency_proof(&t, old, size).unwrap();
                verify_consistency(old, size, &t.root_at(old), &root, &p).unwrap();
            }
        }
    }

    #[test]
    fn frontier_reports_completed_nodes_matching_memory_tree() {
        let leaves: Vec<Hash> = (0..37u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let t = MemoryTree::new(leaves.clone());
        let mut f = Frontier::new();
        let mut seen = 0;
        for l in &leaves {
            f.push_with(*l, |level, index, hash| {
                assert_eq!(t.node(level, index).unwrap(), *hash);
                seen += 1;
            });
        }
        // A tree of n leaves has n - popcount(n) completed interior nodes.
        assert_eq!(seen, 37 - 37u32.count_ones());
    }

    #[test]
    fn range_proofs_round_trip_and_detect_changes() {
        let leaves: Vec<Hash> = (0..45u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let t = MemoryTree::new(leaves.clone());
        for size in [1u64, 7, 8, 33, 45] {
            let root = t.root_at(size);
            for start in 0..size {
                for end in start..=size {
                    let p = range_proof(&t, start, end, size).unwrap();
                    let run = &leaves[start as usize..end as usize];
                    assert_eq!(root_from_range(start, run, size, &p).unwrap(), root);
                    if !run.is_empty() {
                        let mut bad = run.to_vec();
                        bad[0][5] ^= 1;
                        assert_ne!(root_from_range(start, &bad, size, &p).unwrap(), root);
                    }
                }
            }
        }
    }

    #[test]
    fn chain_hash_is_order_sensitive() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let ab = chain_hash(&chain_hash(&GENESIS_CHAIN, &a), &b);
        let ba = chain_hash(&chain_hash(&GENESIS_CHAIN, &b), &a);
        assert_ne!(ab, ba);
    }
}
