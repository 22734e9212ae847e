//! RFC 6962 / RFC 9162 Merkle tree hashing with inclusion and consistency
//! proofs: the structure behind askee's tamper-evident audit log.

use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("index {index} is outside a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("first tree size {first} is larger than second tree size {second}")]
    SizeOrder { first: u64, second: u64 },
    #[error("proof has the wrong number of hashes")]
    Length,
    #[error("proof does not lead to the expected root")]
    Mismatch,
}

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH over leaf hashes, computed bottom-up in one pass.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path for leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(index: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
        if d.len() <= 1 {
            return;
        }
        let k = split(d.len());
        if m < k {
            path(m, &d[..k], out);
            out.push(root(&d[k..]));
        } else {
            path(m - k, &d[k..], out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    path(index as usize, leaves, &mut out);
    Ok(out)
}

/// RFC 9162 section 2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if &r != root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The consistency proof between the first `first` leaves and all `leaves`.
pub fn consistency_proof(first: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let second = leaves.len() as u64;
    if first > second {
        return Err(ProofError::SizeOrder { first, second });
    }
    fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
        let n = d.len();
        if m == n {
            if !whole {
                out.push(root(d));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, &d[..k], whole, out);
            out.push(root(&d[k..]));
        } else {
            subproof(m - k, &d[k..], false, out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(first as usize, leaves, true, &mut out);
    }
    Ok(out)
}

/// RFC 9162 section 2.1.4.2, with the trivial cases (equal sizes, an empty
/// first tree) handled first.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizeOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if first == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Length)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn known_root_of_rfc6962_reference_tree() {
        // The eight-leaf test vector used by Certificate Transparency
        // implementations (certificate-transparency-go, trillian).
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(
            hex::encode(root(&hashes)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_tampered_one_does() {
        for n in 1..=33usize {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n as u64 {
                let proof = inclusion_proof(i, &l).unwrap();
                verify_inclusion(i, n as u64, &l[i as usize], &proof, &r).unwrap();
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(i, n as u64, &other, &proof, &r).is_err());
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(i, n as u64, &l[i as usize], &bad, &r).is_err());
                    assert!(
                        verify_inclusion(i, n as u64, &l[i as usize], &proof[1..], &r).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_no_tampered_one_does() {
        for n in 1..=33usize {
            let l = leaves(n);
            let r2 = root(&l);
            for m in 0..=n {
                let r1 = root(&l[..m]);
                let proof = consistency_proof(m as u64, &l).unwrap();
                verify_consistency(m as u64, n as u64, &r1, &r2, &proof).unwrap();
                if m > 0 && m < n {
                    let mut bad_root = r1;
                    bad_root[3] ^= 1;
                    assert!(
                        verify_consistency(m as u64, n as u64, &bad_root, &r2, &proof).is_err()
                    );
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last][0] ^= 1;
                    assert!(verify_consistency(m as u64, n as u64, &r1, &r2, &bad).is_err());
                }
            }
        }
    }

    #[test]
    fn a_rewritten_history_is_not_consistent() {
        let l = leaves(10);
        let mut rewritten = l.clone();
        rewritten[2] = leaf_hash(b"edited");
        let proof = consistency_proof(5, &rewritten).unwrap();
        assert_eq!(
            verify_consistency(5, 10, &root(&l[..5]), &root(&rewritten), &proof),
            Err(ProofError::Mismatch)
        );
    }
}
