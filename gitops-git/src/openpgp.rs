//! OpenPGP signature verification of commits and tags (what `git commit -S`
//! makes with GnuPG), in process with the pure-Rust `pgp` crate (rpgp).
//!
//! rpgp checks signatures; which key vouches for what, and when, is decided
//! here: the signing key (primary or signing subkey) must be bound by a valid
//! self-signature, not revoked, and not expired when the signature was made.

use std::fmt;
use std::time::SystemTime;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use crate::verify::show;

/// Why a file of OpenPGP public keys could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgpKeysError {
    /// The text holds no armored public key block.
    #[error(
        "no armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----) in it; \
         export one with `gpg --armor --export KEYID`"
    )]
    NoKey,
    /// A block is a private key: refused unread, it does not belong here.
    #[error(
        "armored block {block} is a private key; give the public key \
         (`gpg --armor --export KEYID`)"
    )]
    PrivateKey {
        /// 1-based number of the armored block in the text.
        block: usize,
    },
    /// A block cannot be read as public keys.
    #[error("armored block {block}: {reason}")]
    Unreadable {
        /// 1-based number of the armored block in the text.
        block: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A key has no valid self-signature (damaged or incomplete).
    #[error("key {fingerprint}: {reason}")]
    Unusable {
        /// The key's fingerprint (hex).
        fingerprint: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One trusted OpenPGP key (a certificate: primary key, user IDs, subkeys).
#[derive(Clone, PartialEq, Eq)]
pub struct PgpKey {
    cert: SignedPublicKey,
}

impl PgpKey {
    /// The primary key's fingerprint, upper-case hex as `gpg` prints it.
    pub fn fingerprint(&self) -> String {
        hex(self.cert.primary_key.fingerprint().as_bytes())
    }

    /// The user IDs (usually `Name <e-mail>`), as written in the key.
    pub fn user_ids(&self) -> Vec<String> {
        self.cert
            .details
            .users
            .iter()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .collect()
    }

    /// Who signed, for logs: the fingerprint and the first user ID.
    fn describe(&self) -> String {
        match self.user_ids().first() {
            Some(user) => format!("{} ({user})", self.fingerprint()),
            None => self.fingerprint(),
        }
    }
}

impl fmt::Debug for PgpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgpKey")
            .field("fingerprint", &self.fingerprint())
            .field("user_ids", &self.user_ids())
            .finish()
    }
}

/// The OpenPGP public keys allowed to sign releases (Argo CD's GnuPG keys,
/// Flux's `verify.secretRef`): armored blocks as `gpg --armor --export`
/// writes them, one or several keys per block, several blocks per text.
///
/// # What a signature must be
///
/// A detached signature over the commit (or tag) without its signature,
/// of a binary or text document, with a creation time, hashed with SHA-2 or
/// SHA-3 (MD5, SHA-1 and RIPEMD-160 are refused: collisions), by a trusted
/// primary key or by one of its subkeys bound for signing (with the
/// subkey's back-signature, as OpenPGP requires).
///
/// # Expiry and revocation
///
/// Expiry is checked at the time the signature states it was made (its
/// creation time, inside the signed data), against the newest self-signature
/// (or subkey binding) made before it: a signature made after the key
/// expired is refused, one made while it was valid still counts after the
/// key expires, so a rollback or a restart on an old release is not refused
/// the day a key expires (as with [`AllowedSigners`](crate::AllowedSigners)
/// windows). A signature dated before the key was created is refused.
///
/// Revocation is for keys that leaked: a key (or subkey) with a valid
/// revocation signature in the trusted file vouches for nothing, whatever
/// the signature's date and the revocation's reason. Import the revocation
/// certificate into the exported key (`gpg --import`, then `gpg --armor
/// --export`) or remove the key from the file. Revocations by a designated
/// revoker (another key) are not honoured: remove the key instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgpKeys {
    keys: Vec<PgpKey>,
}

impl PgpKeys {
    /// No keys (every OpenPGP signature fails).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads armored public keys; an error names the block or the key.
    pub fn parse(armored: &str) -> Result<Self, PgpKeysError> {
        let mut keys = Self::new();
        keys.add_armored(armored)?;
        Ok(keys)
    }

    /// Adds the armored public keys in `armored` (nothing is added on error).
    pub fn add_armored(&mut self, armored: &str) -> Result<&mut Self, PgpKeysError> {
        let blocks = armored_blocks(armored);
        if blocks.is_empty() {
            return Err(PgpKeysError::NoKey);
        }
        let mut added = Vec::new();
        for (index, (kind, text)) in blocks.into_iter().enumerate() {
            let block = index + 1;
            if kind.contains("PRIVATE KEY") {
                return Err(PgpKeysError::PrivateKey { block });
            }
            if kind != "PUBLIC KEY BLOCK" {
                return Err(PgpKeysError::Unreadable {
                    block,
                    reason: format!("a PGP {kind}, not a PGP PUBLIC KEY BLOCK"),
                });
            }
            added.extend(read_block(block, text)?);
        }
        self.keys.extend(added);
        Ok(self)
    }

    /// Adds the keys of `other`.
    pub fn extend(&mut self, other: PgpKeys) -> &mut Self {
        self.keys.extend(other.keys);
        self
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PgpKey] {
        &self.keys
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies an armored OpenPGP signature over `payload`; returns the
    /// signer (fingerprint and user ID), or why the signature is not valid:
    /// unreadable, a weak hash, an unknown key, content that does not match,
    /// a key expired or not yet created when the signature was made, a
    /// revoked key (see [Expiry and revocation](Self#expiry-and-revocation)).
    pub fn verify(&self, payload: &[u8], armored: &[u8]) -> Result<String, String> {
        let sig = read_signature(armored)?;
        let at = sig
            .created()
            .ok_or("the OpenPGP signature has no creation time")?
            .as_secs();
        let issuers = issuers(&sig);
        let mut matched = false;
        let mut refused = None;
        for key in &self.keys {
            for signer in signers_of(&key.cert, &sig) {
                matched = true;
                if !signer.made(&sig, payload) {
                    continue;
                }
                // A genuine signature: now whether the key vouched for it then.
                match signer.valid_at(&key.cert, at) {
                    Ok(()) => {
                        expired_signature(&sig, at)?;
                        return Ok(key.describe());
                    }
                    Err(reason) => {
                        refused.get_or_insert(reason);
                    }
                }
            }
        }
        Err(match (refused, matched) {
            (Some(reason), _) => reason,
            (None, true) => "bad signature (content does not match)".to_owned(),
            (None, false) => format!("signed by an OpenPGP key that is not trusted ({issuers})"),
        })
    }
}

/// The armored blocks of a text: (`PUBLIC KEY BLOCK`, the block's text).
fn armored_blocks(text: &str) -> Vec<(&str, &str)> {
    const BEGIN: &str = "-----BEGIN PGP ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let from = &rest[start..];
        let kind = from[BEGIN.len()..]
            .split_once("-----")
            .map_or("", |(kind, _)| kind);
        let end_marker = format!("-----END PGP {kind}-----");
        let (block, after) = match from.find(&end_marker) {
            Some(end) => from.split_at(end + end_marker.len()),
            None => (from, ""),
        };
        blocks.push((kind, block));
        rest = after;
    }
    blocks
}

/// The keys of one armored public key block, each with a valid self-signature.
fn read_block(block: usize, text: &str) -> Result<Vec<PgpKey>, PgpKeysError> {
    let unreadable = |e: pgp::errors::Error| PgpKeysError::Unreadable {
        block,
        reason: short(&e),
    };
    let (certs, _headers) =
        SignedPublicKey::from_armor_many(text.as_bytes()).map_err(unreadable)?;
    let mut keys = Vec::new();
    for cert in certs {
        let cert = cert.map_err(unreadable)?;
        if self_signatures(&cert).next().is_none() {
            return Err(PgpKeysError::Unusable {
                fingerprint: hex(cert.primary_key.fingerprint().as_bytes()),
                reason: "no valid self-signature (a damaged or incomplete key)".to_owned(),
            });
        }
        keys.push(PgpKey { cert });
    }
    if keys.is_empty() {
        return Err(PgpKeysError::Unreadable {
            block,
            reason: "no public key in it".to_owned(),
        });
    }
    Ok(keys)
}

/// The one signature of an armored detached signature, of a document, with
/// a strong hash.
fn read_signature(armored: &[u8]) -> Result<Signature, String> {
    let unreadable = |e: pgp::errors::Error| format!("unreadable OpenPGP signature: {}", short(&e));
    let (mut sigs, _headers) = DetachedSignature::from_armor_many(armored).map_err(unreadable)?;
    let sig = sigs
        .next()
        .ok_or("unreadable OpenPGP signature: no signature in it")?
        .map_err(unreadable)?
        .signature;
    if sigs.next().is_some() {
        return Err("the OpenPGP signature block holds more than one signature".to_owned());
    }
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(format!(
            "the OpenPGP signature is of type {:?}, not a document signature",
            sig.typ()
        ));
    }
    match sig.hash_alg() {
        Some(weak @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) => {
            Err(format!(
                "the OpenPGP signature uses the weak hash {weak:?} (collisions); \
                 sign with SHA-256 or stronger (gpg --personal-digest-preferences SHA512)"
            ))
        }
        _ => Ok(sig),
    }
}

/// A signature whose own expiration time (if any) has passed.
fn expired_signature(sig: &Signature, at: u32) -> Result<(), String> {
    let Some(lifetime) = sig
        .signature_expiration_time()
        .map(std::time::Duration::from)
    else {
        return Ok(());
    };
    if lifetime.is_zero() {
        return Ok(());
    }
    let until = i64::from(at).saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    if unix_now() > until {
        return Err(format!("the OpenPGP signature expired at {}", show(until)));
    }
    Ok(())
}

/// The key that may have made `sig`: the primary key or a subkey.
enum Signer<'a> {
    Primary(&'a PublicKey),
    Subkey(&'a SignedPublicSubKey),
}

/// The keys of `cert` that `sig` names as its issuer (all, when it names none).
fn signers_of<'a>(cert: &'a SignedPublicKey, sig: &Signature) -> Vec<Signer<'a>> {
    let mut signers = Vec::new();
    if names(sig, &cert.primary_key) {
        signers.push(Signer::Primary(&cert.primary_key));
    }
    for sub in &cert.public_subkeys {
        if names(sig, &sub.key) {
            signers.push(Signer::Subkey(sub));
        }
    }
    signers
}

impl Signer<'_> {
    /// Whether `sig` over `payload` is this key's (cryptographically).
    fn made(&self, sig: &Signature, payload: &[u8]) -> bool {
        match self {
            Signer::Primary(key) => sig.verify(*key, payload).is_ok(),
            Signer::Subkey(sub) => sig.verify(&sub.key, payload).is_ok(),
        }
    }

    /// Whether this key vouched for a signature made at `at` (unix seconds).
    fn valid_at(&self, cert: &SignedPublicKey, at: u32) -> Result<(), String> {
        let primary = &cert.primary_key;
        let fingerprint = hex(primary.fingerprint().as_bytes());
        if let Some(revocation) = key_revocation(cert) {
            return Err(revoked(&format!("key {fingerprint}"), revocation));
        }
        let binding = newest_before(self_signatures(cert), at).ok_or_else(|| {
            before_creation(
                &format!("key {fingerprint}"),
                primary.created_at().as_secs(),
                at,
            )
        })?;
        not_expired(
            &format!("key {fingerprint}"),
            primary.created_at().as_secs(),
            binding,
            at,
        )?;
        let sub = match self {
            Signer::Primary(_) => {
                let flags = binding.key_flags();
                if flags != Default::default() && !flags.sign() {
                    return Err(format!(
                        "the OpenPGP key {fingerprint} is not for signing (its key flags)"
                    ));
                }
                return Ok(());
            }
            Signer::Subkey(sub) => sub,
        };
        let name = format!(
            "subkey {} of key {fingerprint}",
            hex(sub.key.fingerprint().as_bytes())
        );
        if let Some(revocation) = sub.signatures.iter().find(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        }) {
            return Err(revoked(&name, revocation));
        }
        let binding = newest_before(signing_bindings(primary, sub), at)
            .ok_or_else(|| before_creation(&name, sub.key.created_at().as_secs(), at))?;
        not_expired(&name, sub.key.created_at().as_secs(), binding, at)
    }
}

/// Whether `sig` names `key` as its issuer (or names no issuer at all).
fn names(sig: &Signature, key: &impl KeyDetails) -> bool {
    let fingerprints = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    (fingerprints.is_empty() && ids.is_empty())
        || fingerprints.iter().any(|f| **f == key.fingerprint())
        || ids.iter().any(|id| **id == key.legacy_key_id())
}

/// The issuer a signature names, for an error.
fn issuers(sig: &Signature) -> String {
    if let Some(fingerprint) = sig.issuer_fingerprint().first() {
        return format!("fingerprint {}", hex(fingerprint.as_bytes()));
    }
    match sig.issuer_key_id().first() {
        Some(id) => format!("key ID {}", hex(id.as_ref())),
        None => "the signature names no issuer".to_owned(),
    }
}

/// The primary key's valid self-signatures: direct-key signatures and its
/// certifications of its own user IDs.
fn self_signatures(cert: &SignedPublicKey) -> impl Iterator<Item = &Signature> {
    let key = &cert.primary_key;
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(move |s| s.typ() == Some(SignatureType::Key) && s.verify_key(key).is_ok());
    let certifications = cert.details.users.iter().flat_map(move |user| {
        user.signatures.iter().filter(move |s| {
            matches!(
                s.typ(),
                Some(
                    SignatureType::CertGeneric
                        | SignatureType::CertPersona
                        | SignatureType::CertCasual
                        | SignatureType::CertPositive
                )
            ) && names(s, key)
                && s.verify_certification(key, Tag::UserId, &user.id).is_ok()
        })
    });
    direct.chain(certifications)
}

/// The subkey's valid bindings for signing (with a valid back-signature).
fn signing_bindings<'a>(
    primary: &'a PublicKey,
    sub: &'a SignedPublicSubKey,
) -> impl Iterator<Item = &'a Signature> {
    sub.signatures.iter().filter(move |s| {
        s.typ() == Some(SignatureType::SubkeyBinding)
            && s.key_flags().sign()
            && s.verify_subkey_binding(primary, &sub.key).is_ok()
            && s.embedded_signature()
                .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok())
    })
}

/// A valid revocation of the primary key, by itself.
fn key_revocation(cert: &SignedPublicKey) -> Option<&Signature> {
    cert.details
        .revocation_signatures
        .iter()
        .find(|s| s.verify_key(&cert.primary_key).is_ok())
}

/// The newest of `signatures` made at or before `at`.
fn newest_before<'a>(
    signatures: impl Iterator<Item = &'a Signature>,
    at: u32,
) -> Option<&'a Signature> {
    signatures
        .filter_map(|s| s.created().map(|c| (c.as_secs(), s)))
        .filter(|(created, _)| *created <= at)
        .max_by_key(|(created, _)| *created)
        .map(|(_, s)| s)
}

/// Why no binding held at `at`: the key did not exist yet, or was not bound yet.
fn before_creation(name: &str, created: u32, at: u32) -> String {
    if at < created {
        format!(
            "the OpenPGP {name} was created at {} and the signature is dated {} (before it)",
            show(created.into()),
            show(at.into())
        )
    } else {
        format!(
            "the OpenPGP {name} has no valid binding signature made before the signature ({})",
            show(at.into())
        )
    }
}

/// Refuses a signature made at `at` after the expiry `binding` sets.
fn not_expired(name: &str, created: u32, binding: &Signature, at: u32) -> Result<(), String> {
    let Some(lifetime) = binding.key_expiration_time().map(std::time::Duration::from) else {
        return Ok(());
    };
    if lifetime.is_zero() {
        return Ok(());
    }
    let expires =
        i64::from(created).saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    if i64::from(at) > expires {
        return Err(format!(
            "the OpenPGP {name} expired at {} and the signature is dated {}",
            show(expires),
            show(at.into())
        ));
    }
    Ok(())
}

fn revoked(name: &str, revocation: &Signature) -> String {
    let reason = match revocation.revocation_reason_code() {
        Some(RevocationCode::KeyCompromised) => "key compromised",
        Some(RevocationCode::KeySuperseded) => "key superseded",
        Some(RevocationCode::KeyRetired) => "key retired",
        _ => "no reason given",
    };
    let when = revocation
        .created()
        .map(|c| format!(" at {}", show(c.as_secs().into())))
        .unwrap_or_default();
    format!("the OpenPGP {name} was revoked{when} ({reason}); a revoked key vouches for nothing")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// An rpgp error on one line, cut short (some print packets with `{:?}`).
fn short(err: &pgp::errors::Error) -> String {
    const MAX: usize = 200;
    let text = err.to_string().replace('\n', " ");
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_armored_blocks() {
        let text = "junk\n-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n\
                    -----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n";
        let blocks = armored_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, "PUBLIC KEY BLOCK");
        assert!(blocks[0].1.ends_with("-----END PGP PUBLIC KEY BLOCK-----"));
        assert_eq!(blocks[1].0, "SIGNATURE");
        assert!(armored_blocks("nothing here").is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_public_key_naming_the_block() {
        assert_eq!(PgpKeys::parse("not a key"), Err(PgpKeysError::NoKey));
        let private =
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nsecret\n-----END PGP PRIVATE KEY BLOCK-----\n";
        let err = PgpKeys::parse(private).expect_err("private");
        assert_eq!(err, PgpKeysError::PrivateKey { block: 1 });
        assert!(!err.to_string().contains("secret"), "{err}");
        let signature = "-----BEGIN PGP SIGNATURE-----\nx\n-----END PGP SIGNATURE-----\n";
        let err = PgpKeys::parse(signature).expect_err("signature");
        assert!(
            err.to_string().contains("block 1: a PGP SIGNATURE"),
            "{err}"
        );
        let garbage =
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let err = PgpKeys::parse(garbage).expect_err("garbage");
        assert!(
            matches!(err, PgpKeysError::Unreadable { block: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_set_trusts_no_signature() {
        let err = PgpKeys::new()
            .verify(b"payload", b"not a signature")
            .expect_err("refused");
        assert!(err.contains("unreadable OpenPGP signature"), "{err}");
    }
}
