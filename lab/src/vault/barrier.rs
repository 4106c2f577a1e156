//! The twin's barrier: Shamir shares in Vault's format and encryption at rest.
//!
//! Vault splits the unseal key over GF(2^8) with the AES polynomial and puts each share's
//! x coordinate in its LAST byte; vsss-rs's Gf256 is the same field with x first, so
//! shares are rotated on the way in and out. With one share the share is the key itself.
//! The unseal key encrypts the barrier key (`core/master`); the barrier key encrypts every
//! entry except the plaintext seal config, so a wrong set of shares cannot read anything.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::Rng;
use serde::{Deserialize, Serialize};
use vsss_rs::Gf256;

pub const KEY_LEN: usize = 32;

/// `core/seal-config`, stored in plaintext so a sealed node can show `t` and `n`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SealConfig {
    #[serde(rename = "type")]
    pub kind: String,
    pub secret_shares: usize,
    pub secret_threshold: usize,
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Checks init's parameters with Vault's words.
pub fn check_params(shares: usize, threshold: usize) -> Result<(), String> {
    if shares < 1 {
        return Err("shares must be at least one".into());
    }
    if threshold < 1 {
        return Err("threshold must be at least one".into());
    }
    if shares > 1 && threshold == 1 {
        return Err("threshold must be greater than one for multiple shares".into());
    }
    if shares > 255 {
        return Err("shares must be less than 256".into());
    }
    if threshold > shares {
        return Err("threshold cannot be larger than shares".into());
    }
    Ok(())
}

/// Splits `key` into `shares` Vault-format shares (x last).
pub fn split(key: &[u8], shares: usize, threshold: usize) -> Result<Vec<Vec<u8>>, String> {
    check_params(shares, threshold)?;
    if shares == 1 {
        return Ok(vec![key.to_vec()]);
    }
    let parts = Gf256::split_bytes(threshold, shares, key, rand::rng())
        .map_err(|e| format!("failed to generate shares: {e:?}"))?;
    Ok(parts
        .into_iter()
        .map(|mut share| {
            share.rotate_left(1);
            share
        })
        .collect())
}

/// Combines Vault-format shares; garbage in gives a wrong key, which decryption catches.
pub fn combine(shares: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    if shares.len() == 1 {
        return Ok(shares[0].clone());
    }
    let parts: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.rotate_right(1);
            s
        })
        .collect();
    Gf256::combine_bytes(&parts).map_err(|e| format!("failed to combine shares: {e:?}"))
}

/// AES-256-GCM with a random nonce in front of the ciphertext.
pub fn encrypt(key: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let nonce = random_bytes(12);
    let mut out = nonce.clone();
    out.extend(
        cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .expect("encryption does not fail"),
    );
    out
}

pub fn decrypt(key: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if key.len() != KEY_LEN || sealed.len() < 12 {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let (nonce, body) = sealed.split_at(12);
    cipher.decrypt(Nonce::from_slice(nonce), body).ok()
}

/// A key share as the user typed it: hex or base64.
pub fn parse_share(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = text.trim();
    if let Some(bytes) = hex_decode(text) {
        return Some(bytes);
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_of_shares_gives_the_key_back() {
        let key = random_bytes(KEY_LEN);
        let shares = split(&key, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        assert!(shares.iter().all(|s| s.len() == KEY_LEN + 1));
        assert_eq!(combine(&shares[2..5]).unwrap(), key);
        assert_eq!(
            combine(&[shares[0].clone(), shares[4].clone(), shares[2].clone()]).unwrap(),
            key
        );
        assert_ne!(combine(&shares[..2]).unwrap(), key);
    }

    /// A share made by Vault's own shamir.Split: y bytes, then x. Built by hand here for
    /// threshold 2 (y = s + a*x over GF(2^8)) so the layout, not the library, is tested.
    #[test]
    fn shares_put_x_in_the_last_byte() {
        let key = vec![0x53u8];
        // a = 0x01: y(1) = 0x53 ^ 0x01, y(2) = 0x53 ^ 0x02.
        let share1 = vec![0x52, 0x01];
        let share2 = vec![0x51, 0x02];
        assert_eq!(combine(&[share1, share2]).unwrap(), key);
    }

    #[test]
    fn a_wrong_key_cannot_decrypt() {
        let key = random_bytes(KEY_LEN);
        let sealed = encrypt(&key, b"barrier");
        assert_eq!(decrypt(&key, &sealed).unwrap(), b"barrier");
        assert!(decrypt(&random_bytes(KEY_LEN), &sealed).is_none());
    }
}
