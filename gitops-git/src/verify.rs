//! SSH signature verification of commits and tags (namespace `git`), in
//! process. OpenPGP signatures are verified by [`PgpKeys`](crate::PgpKeys);
//! [`TrustedSigners`](crate::TrustedSigners) holds both.

use std::fmt;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use ssh_key::{HashAlg, PublicKey, SshSig};

/// Which signature must be valid before a revision is deployed (as in Flux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// The commit itself must carry a valid signature.
    Head,
    /// The annotated tag the release was selected through must carry a valid
    /// signature (only meaningful with the `Tag` and `Semver` policies).
    Tag,
    /// Both the tag and the commit it points to.
    TagAndHead,
}

/// Why an allowed-signers list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed signers line {line}: {reason}")]
pub struct AllowedSignersError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// One trusted key, with the window in which its signatures count.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    principals: Vec<String>,
    key: PublicKey,
    /// Unix seconds; a signature made before is refused.
    valid_after: Option<i64>,
    /// Unix seconds; a signature made after is refused.
    valid_before: Option<i64>,
    /// 1-based line of the allowed-signers file; 0 for [`AllowedSigners::add`].
    line: usize,
}

impl AllowedSigner {
    /// The principals (usually e-mail addresses) of the key.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// The line's `valid-after`: signatures made before it are refused.
    pub fn valid_after(&self) -> Option<SystemTime> {
        self.valid_after.map(system_time)
    }

    /// The line's `valid-before`: signatures made after it are refused.
    pub fn valid_before(&self) -> Option<SystemTime> {
        self.valid_before.map(system_time)
    }

    /// Why the key does not vouch for a signature made at `at` (unix
    /// seconds), if it does not; both ends are inclusive, as in ssh-keygen.
    fn outside_window(&self, at: i64) -> Option<String> {
        let place = if self.line == 0 {
            String::new()
        } else {
            format!(" (allowed signers line {})", self.line)
        };
        if let Some(after) = self.valid_after.filter(|&after| at < after) {
            return Some(format!(
                "the key {}{place} is not valid until {} (valid-after) and the signature is dated {}",
                self.fingerprint(),
                show(after),
                show(at)
            ));
        }
        if let Some(before) = self.valid_before.filter(|&before| at > before) {
            return Some(format!(
                "the key {}{place} expired at {} (valid-before) and the signature is dated {}",
                self.fingerprint(),
                show(before),
                show(at)
            ));
        }
        None
    }

    /// The key's SHA-256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

impl fmt::Debug for AllowedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedSigner")
            .field("principals", &self.principals)
            .field("key", &self.fingerprint())
            .finish()
    }
}

/// The keys allowed to sign releases, in the format of git's
/// `gpg.ssh.allowedSignersFile` (`principals [options] keytype base64
/// [comment]`; see `man ssh-keygen`, ALLOWED SIGNERS).
///
/// Options (comma-separated, values in double quotes, names in any case):
///
/// - `namespaces="..."`: a list that does not include `git` excludes the key.
/// - `valid-after="..."` and `valid-before="..."`: the key only vouches for
///   signatures made inside this window (both ends inclusive). Timestamps
///   are `YYYYMMDD[HHMM[SS]]`, in the system time zone, or in UTC with a
///   `Z` (or `UTC`) suffix, as ssh-keygen reads them.
/// - `cert-authority` is refused at parse, naming the line: certificates are
///   not supported (list the signers' own keys instead). Any other option is
///   refused too, rather than ignored.
///
/// # When a signature was made
///
/// The window is checked against the time the signed object states: the
/// committer time of a commit, the tagger time of a tag (see
/// [`verify_at`](Self::verify_at)). That is what `git verify-commit` and
/// `git log --show-signature` do (git hands it to `ssh-keygen -Y verify` as
/// `-Overify-time`), and it is what keeps history deployable: a key rotated
/// out with `valid-before` still vouches for the commits it signed while it
/// was valid, so a rollback to an old revision or a restart on the same
/// commit is not refused the day the key expires, and a key added with
/// `valid-after` does not vouch for commits dated before it. The time is
/// inside the signed payload, so nobody without the key can change it; but
/// the key's holder chooses it, and could date a new commit inside the
/// window. A window is for rotation, not revocation: remove the line of a
/// key that leaked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    signers: Vec<AllowedSigner>,
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl AllowedSigners {
    /// An empty list (every signature fails).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses an allowed-signers file; an error names the line.
    pub fn parse(text: &str) -> Result<Self, AllowedSignersError> {
        let mut signers = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| AllowedSignersError {
                line: index + 1,
                reason,
            };
            if let Some(signer) = parse_line(line, index + 1).map_err(err)? {
                signers.push(signer);
            }
        }
        Ok(Self { signers })
    }

    /// Adds one key in OpenSSH format (`ssh-ed25519 AAAA... comment`) for `principal`.
    pub fn add(
        &mut self,
        principal: impl Into<String>,
        openssh_key: &str,
    ) -> Result<&mut Self, AllowedSignersError> {
        let key = PublicKey::from_openssh(openssh_key.trim()).map_err(|e| AllowedSignersError {
            line: 0,
            reason: format!("bad public key: {e}"),
        })?;
        self.signers.push(AllowedSigner {
            principals: vec![principal.into()],
            key,
            valid_after: None,
            valid_before: None,
            line: 0,
        });
        Ok(self)
    }

    /// The trusted keys.
    pub fn signers(&self) -> &[AllowedSigner] {
        &self.signers
    }

    /// Verifies an armored SSH signature over `payload` made now (validity
    /// windows are checked against the current time, as `ssh-keygen -Y
    /// verify` does without `verify-time`); returns the signer's principals,
    /// or why the signature is not valid. The source uses
    /// [`verify_at`](Self::verify_at) with the signed object's own time.
    pub fn verify(&self, payload: &[u8], armored: &[u8]) -> Result<String, String> {
        self.verify_at(payload, armored, SystemTime::now())
    }

    /// Verifies an armored SSH signature over `payload` made at `signed_at`
    /// (for a commit its committer time, for a tag its tagger time; see
    /// [When a signature was made](Self#when-a-signature-was-made)); returns
    /// the signer's principals, or why the signature is not valid: not an
    /// SSH signature, another namespace, an unknown key, content that does
    /// not match, or a key whose validity window does not hold `signed_at`.
    pub fn verify_at(
        &self,
        payload: &[u8],
        armored: &[u8],
        signed_at: SystemTime,
    ) -> Result<String, String> {
        let sig = SshSig::from_pem(armored).map_err(|e| {
            if armored.starts_with(b"-----BEGIN PGP") {
                "an OpenPGP signature, checked against SSH allowed signers \
                 (trust OpenPGP keys with PgpKeys)"
                    .to_owned()
            } else {
                format!("unreadable SSH signature: {e}")
            }
        })?;
        if sig.namespace() != "git" {
            return Err(format!(
                "signature namespace is {:?}, expected \"git\"",
                sig.namespace()
            ));
        }
        let mut matching = self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == sig.public_key())
            .peekable();
        let Some(first) = matching.peek().copied() else {
            return Err(format!(
                "signed by a key that is not in the allowed signers ({})",
                PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256)
            ));
        };
        // The same key on every matching line: the signature first, so a
        // window's verdict is only ever given on a genuine signature.
        first
            .key
            .verify("git", payload, &sig)
            .map_err(|e| format!("bad signature (content does not match): {e}"))?;
        let at = unix_seconds(signed_at);
        let mut refused = None;
        for signer in matching {
            match signer.outside_window(at) {
                None => return Ok(signer.principals.join(",")),
                Some(reason) => {
                    refused.get_or_insert(reason);
                }
            }
        }
        Err(refused.unwrap_or_default())
    }
}

/// One non-comment line: `None` when its namespaces exclude git.
fn parse_line(line: &str, number: usize) -> Result<Option<AllowedSigner>, String> {
    let (principals, rest) = field(line);
    let (second, mut rest) = field(rest);
    let (options, key_type) = if KEY_TYPES.contains(&second) {
        ("", second)
    } else {
        let (key_type, after) = field(rest);
        rest = after;
        (second, key_type)
    };
    if !KEY_TYPES.contains(&key_type) {
        return Err(if KEY_TYPES.contains(&principals) {
            "missing principals".to_owned()
        } else {
            "no known key type".to_owned()
        });
    }
    let (base64, _comment) = field(rest);
    if base64.is_empty() {
        return Err("missing key data".to_owned());
    }
    let options = Options::parse(options)?;
    if options
        .namespaces
        .as_deref()
        .is_some_and(|ns| !ns.split(',').any(|n| n == "git"))
    {
        return Ok(None);
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| format!("bad public key: {e}"))?;
    Ok(Some(AllowedSigner {
        principals: unquote(principals).split(',').map(str::to_owned).collect(),
        key,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        line: number,
    }))
}

/// The next whitespace-separated field (spaces inside double quotes kept)
/// and the rest of the line.
fn field(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&text[..i], &text[i..]),
            _ => {}
        }
    }
    (text, "")
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The options of one line.
#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

impl Options {
    fn parse(text: &str) -> Result<Self, String> {
        let mut options = Self::default();
        if text.is_empty() {
            return Ok(options);
        }
        for option in split_options(text) {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(unquote(value))),
                None => (option, None),
            };
            let name = name.to_ascii_lowercase();
            let slot = match name.as_str() {
                "cert-authority" => {
                    return Err("cert-authority: certificates are not supported; \
                         list each signer's own key instead"
                        .to_owned());
                }
                "namespaces" => {
                    let value = value.ok_or("namespaces needs a value")?;
                    if options.namespaces.replace(value.to_owned()).is_some() {
                        return Err("namespaces given twice".to_owned());
                    }
                    continue;
                }
                "valid-after" => &mut options.valid_after,
                "valid-before" => &mut options.valid_before,
                _ => return Err(format!("unknown option {option:?}")),
            };
            let value = value.ok_or_else(|| format!("{name} needs a value"))?;
            let time = parse_time(value).map_err(|e| format!("{name}={value:?}: {e}"))?;
            if slot.replace(time).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        if let (Some(after), Some(before)) = (options.valid_after, options.valid_before)
            && before <= after
        {
            return Err("valid-before is not after valid-after".to_owned());
        }
        Ok(options)
    }
}

/// Splits `a,b="x,y",c` at the commas outside double quotes.
fn split_options(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `YYYYMMDD[HHMM[SS]]` in the system time zone, or in UTC with a `Z` or
/// `UTC` suffix (as ssh-keygen reads `valid-after` and `valid-before`), as
/// unix seconds.
fn parse_time(text: &str) -> Result<i64, String> {
    const FORMAT: &str = "expected YYYYMMDD[HHMM[SS]][Z]";
    let upper = text.to_ascii_uppercase();
    let (digits, zone) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, TimeZone::UTC)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, TimeZone::UTC)
    } else {
        (upper.as_str(), TimeZone::system())
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FORMAT.to_owned());
    }
    let number = |range: std::ops::Range<usize>| -> i16 {
        digits.get(range).and_then(|d| d.parse().ok()).unwrap_or(0)
    };
    let civil = DateTime::new(
        number(0..4),
        number(4..6) as i8,
        number(6..8) as i8,
        number(8..10) as i8,
        number(10..12) as i8,
        number(12..14) as i8,
        0,
    )
    .map_err(|e| format!("{FORMAT}: {e}"))?;
    let zoned = civil.to_zoned(zone).map_err(|e| e.to_string())?;
    Ok(zoned.timestamp().as_second())
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Unix seconds as a `SystemTime`.
pub(crate) fn system_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

/// Unix seconds as an RFC 3339 UTC time.
pub(crate) fn show(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| format!("{seconds} s"), |t| t.to_string())
}

/// Splits a raw tag object into `(payload, armored signature)`.
pub(crate) fn split_tag_signature(data: &[u8]) -> Option<(&[u8], &[u8])> {
    const MARKERS: &[&[u8]] = &[
        b"-----BEGIN SSH SIGNATURE-----",
        b"-----BEGIN PGP SIGNATURE-----",
    ];
    let mut best: Option<usize> = None;
    for marker in MARKERS {
        let mut from = 0;
        while let Some(pos) = find(&data[from..], marker) {
            let at = from + pos;
            if at == 0 || data[at - 1] == b'\n' {
                best = Some(best.map_or(at, |b| b.min(at)));
                break;
            }
            from = at + 1;
        }
    }
    best.map(|at| (&data[..at], &data[at..]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_allowed_signers_and_options() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtYyUcAPXVfZ6jm5QFMDaPPgwMUnnXGwJ9l9WRbc7PJ";
        let text = format!(
            "# comment\n\nalice@example.com {key} alice\nbob@example.com namespaces=\"file\" {key}\n"
        );
        let signers = AllowedSigners::parse(&text).expect("parses");
        assert_eq!(signers.signers().len(), 1);
        assert_eq!(signers.signers()[0].principals(), ["alice@example.com"]);
        assert!(signers.signers()[0].fingerprint().starts_with("SHA256:"));
        assert!(AllowedSigners::parse("alice ssh-ed25519 !!!").is_err());
        assert!(AllowedSigners::parse("alice nokey").is_err());
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtYyUcAPXVfZ6jm5QFMDaPPgwMUnnXGwJ9l9WRbc7PJ";

    fn refused(text: &str) -> AllowedSignersError {
        AllowedSigners::parse(text).expect_err(text)
    }

    #[test]
    fn reads_validity_windows() {
        let text = format!(
            "a@x valid-after=\"20200101Z\",VALID-BEFORE=\"20201231235959Z\" {KEY}\n\
             b@x valid-after=\"202001021230UTC\" {KEY}\n\
             \"c@x,d@x\" namespaces=\"file,git\" {KEY}\n"
        );
        let signers = AllowedSigners::parse(&text).expect("parses");
        let [a, b, c] = signers.signers() else {
            panic!("{signers:?}")
        };
        assert_eq!(a.valid_after(), Some(system_time(1_577_836_800)));
        assert_eq!(a.valid_before(), Some(system_time(1_609_459_199)));
        assert_eq!(b.valid_after(), Some(system_time(1_577_968_200)));
        assert_eq!(b.valid_before(), None);
        assert_eq!(c.principals(), ["c@x", "d@x"]);
        assert!(a.outside_window(1_577_836_800).is_none());
        assert!(a.outside_window(1_609_459_199).is_none());
        let early = a.outside_window(1_577_836_799).expect("too early");
        assert!(
            early.contains("line 1") && early.contains("not valid until 2020-01-01T00:00:00Z"),
            "{early}"
        );
        let late = a.outside_window(1_609_459_200).expect("too late");
        assert!(late.contains("expired at 2020-12-31T23:59:59Z"), "{late}");
    }

    #[test]
    fn refuses_what_it_cannot_honour_naming_the_line() {
        let err = refused(&format!("# ca\n\n*@x cert-authority {KEY}\n"));
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("cert-authority"), "{err}");
        let err = refused(&format!(
            "a@x {KEY}\nb@x cert-authority,namespaces=\"file\" {KEY}\n"
        ));
        assert_eq!(err.line, 2, "refused even when the namespaces exclude git");
        for (options, reason) in [
            ("valid-after=\"2020\"", "YYYYMMDD"),
            ("valid-after=\"20201301Z\"", "YYYYMMDD"),
            ("valid-before=\"2020010112Z\"", "YYYYMMDD"),
            ("valid-after", "needs a value"),
            (
                "valid-after=\"20200101Z\",valid-after=\"20200102Z\"",
                "twice",
            ),
            (
                "valid-after=\"20200102Z\",valid-before=\"20200101Z\"",
                "not after",
            ),
            ("no-touch-required", "unknown option"),
        ] {
            let err = refused(&format!("a@x {options} {KEY}"));
            assert_eq!(err.line, 1);
            assert!(err.reason.contains(reason), "{options}: {err}");
        }
    }

    #[test]
    fn splits_tag_signature() {
        let data = b"object x\ntag v1\n\nmsg\n-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n";
        let (payload, sig) = split_tag_signature(data).expect("signed");
        assert_eq!(payload, b"object x\ntag v1\n\nmsg\n");
        assert!(sig.starts_with(b"-----BEGIN SSH"));
        assert!(split_tag_signature(b"object x\n\nmsg\n").is_none());
    }
}
