//! Webhook signatures, both ways: verifying what GitHub, GitLab and
//! Standard Webhooks senders sign, and signing what the agent sends.
//!
//! The schemes are small compositions of HMAC-SHA256 (`hmac`, `sha2`) and a
//! constant-time compare (`subtle`); no crate implements all three, so they
//! are spelled out here.
//!
//! ```
//! use gitops_agent::signing::{StandardWebhooks, WebhookSecret};
//!
//! let secret = WebhookSecret::new(b"s3cret".to_vec());
//! let signer = StandardWebhooks::new(&secret);
//! let signature = signer.sign("msg_1", 1_700_000_000, b"{}");
//! assert!(signer.verify("msg_1", 1_700_000_000, b"{}", &signature).is_ok());
//! assert!(signer.verify("msg_1", 1_700_000_000, b"{ }", &signature).is_err());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks `webhook-timestamp` may be from now.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Why a signature was refused. Carries no secret and no signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A header the scheme needs is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header is there but not in the scheme's form.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The timestamp is more than five minutes away from now.
    #[error("webhook-timestamp is {0} s away from now (at most 300 s)")]
    Stale(i64),
    /// The signature does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Why a secret file could not be read. Names the file, never the content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (after one trailing newline).
    #[error("{path}: the secret is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A shared secret. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Reads a secret file; one trailing newline (`\n` or `\r\n`) is stripped.
    pub fn read(path: &Path) -> Result<Self, SecretFileError> {
        let mut bytes = std::fs::read(path).map_err(|source| SecretFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(SecretFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Self(bytes))
    }

    /// The secret as given (GitHub's HMAC key, GitLab's token).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The Standard Webhooks key: a `whsec_<base64>` secret decoded, any
    /// other secret as given.
    pub fn standard_key(&self) -> Vec<u8> {
        self.0
            .strip_prefix(b"whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .unwrap_or_else(|| self.0.clone())
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Verifies GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn verify_github(
    secret: &WebhookSecret,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    const NAME: &str = "X-Hub-Signature-256";
    let header = header.ok_or(SignatureError::Missing(NAME))?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(NAME))?;
    let given = decode_hex(hex).ok_or(SignatureError::Malformed(NAME))?;
    mac(secret.as_bytes(), &[body])
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign_github(secret: &WebhookSecret, body: &[u8]) -> String {
    let tag = mac(secret.as_bytes(), &[body]).finalize().into_bytes();
    format!("sha256={}", encode_hex(&tag))
}

/// Verifies GitLab's `X-Gitlab-Token` (the plain secret), in constant time.
pub fn verify_gitlab(secret: &WebhookSecret, header: Option<&str>) -> Result<(), SignatureError> {
    let token = header.ok_or(SignatureError::Missing("X-Gitlab-Token"))?;
    if constant_time_eq(token.as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The Standard Webhooks scheme (<https://www.standardwebhooks.com>):
/// `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
#[derive(Clone)]
pub struct StandardWebhooks {
    key: Vec<u8>,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardWebhooks(***)")
    }
}

impl StandardWebhooks {
    /// A signer and verifier for `secret` (`whsec_` secrets are decoded).
    pub fn new(secret: &WebhookSecret) -> Self {
        Self {
            key: secret.standard_key(),
        }
    }

    fn tag(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let timestamp = timestamp.to_string();
        mac(
            &self.key,
            &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
        )
        .finalize()
        .into_bytes()
        .to_vec()
    }

    /// The `webhook-signature` value for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.tag(id, timestamp, body)))
    }

    /// Checks a `webhook-signature` header (space-separated `v1,<base64>`
    /// entries; one match is enough). Does not check the timestamp's age:
    /// see [`check_timestamp`].
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
    ) -> Result<(), SignatureError> {
        let expected = self.tag(id, timestamp, body);
        let mut any = false;
        for entry in header.split_whitespace() {
            let Some(b64) = entry.strip_prefix("v1,") else {
                continue;
            };
            any = true;
            if let Ok(given) = STANDARD.decode(b64)
                && constant_time_eq(&given, &expected)
            {
                return Ok(());
            }
        }
        if any {
            Err(SignatureError::Mismatch)
        } else {
            Err(SignatureError::Malformed("webhook-signature"))
        }
    }
}

/// Checks a `webhook-timestamp` (unix seconds) against `now`.
pub fn check_timestamp(header: &str, now: i64) -> Result<i64, SignatureError> {
    let timestamp: i64 = header
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    let off = now.saturating_sub(timestamp).saturating_abs();
    if off > TIMESTAMP_TOLERANCE_SECS {
        return Err(SignatureError::Stale(off));
    }
    Ok(timestamp)
}

/// Lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::new(b"It's a Secret to Everybody".to_vec())
    }

    #[test]
    fn github_signature_from_githubs_docs() {
        // The example in GitHub's "Validating webhook deliveries".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_github(&secret(), b"Hello, World!", Some(header)),
            Ok(())
        );
        assert_eq!(sign_github(&secret(), b"Hello, World!"), header);
        assert_eq!(
            verify_github(&secret(), b"Hello, World?", Some(header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github(&secret(), b"x", None),
            Err(SignatureError::Missing("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify_github(&secret(), b"x", Some("sha1=00")),
            Err(SignatureError::Malformed("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn gitlab_token() {
        assert_eq!(
            verify_gitlab(&secret(), Some("It's a Secret to Everybody")),
            Ok(())
        );
        assert_eq!(
            verify_gitlab(&secret(), Some("It's a Secret to Everybod")),
            Err(SignatureError::Mismatch)
        );
        assert!(verify_gitlab(&secret(), None).is_err());
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        // The test vector of the Standard Webhooks reference libraries.
        let secret = WebhookSecret::new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_vec());
        let signer = StandardWebhooks::new(&secret);
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            expected
        );
        let other = format!("v1,bm9wZQ== {expected}");
        assert_eq!(
            signer.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &other),
            Ok(())
        );
        assert_eq!(
            signer.verify("msg_other", 1614265330, body, expected),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signer.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, "v2,abc"),
            Err(SignatureError::Malformed("webhook-signature"))
        );
    }

    #[test]
    fn timestamps_within_five_minutes() {
        assert_eq!(check_timestamp("1000", 1000 + 300), Ok(1000));
        assert_eq!(check_timestamp("1000", 1000 - 300), Ok(1000));
        assert_eq!(
            check_timestamp("1000", 1301),
            Err(SignatureError::Stale(301))
        );
        assert!(check_timestamp("soon", 1000).is_err());
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\n\n").expect("write");
        assert_eq!(
            WebhookSecret::read(&path).expect("read").as_bytes(),
            b"abc\n"
        );
        std::fs::write(&path, "abc\r\n").expect("write");
        assert_eq!(WebhookSecret::read(&path).expect("read").as_bytes(), b"abc");
        std::fs::write(&path, "\n").expect("write");
        assert!(matches!(
            WebhookSecret::read(&path),
            Err(SecretFileError::Empty { .. })
        ));
        let missing = WebhookSecret::read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"));
        assert_eq!(format!("{:?}", WebhookSecret::read(&path).ok()), "None");
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(***)");
    }
}
