//! The stat cache's file: one line per entry, a header naming the root it
//! was written for and a trailer with the entry count and a SHA-256 of
//! everything before it, so that a torn, truncated or edited file is
//! refused whole (and every file read once) rather than half-trusted.
//!
//! ```text
//! gitops-stat-cache 2 <root dev> <root inode> <entries> <epoch>
//! <sha256 hex> <t|u> <dev> <ino> <size> <mtime s> <mtime ns> <ctime s> <ctime ns> <mode octal> <recorded s> <recorded ns> <path>
//! end <entries> <sha256 hex of the lines above>
//! ```
//!
//! The epoch (32 hex digits) names the entries' content: it changes with
//! every change of an entry (see `StatCache::seal`). Version 1 had none; a
//! version-1 file is refused like any other (every file is read once).
//!
//! Paths come last: they may hold spaces, never a control character
//! (`validate_relative_path`), so never a newline. No file contents.

use std::io::{self, Write as _};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::stat_cache::{Entries, Entry, RootId, StatKey, Time, hex, unhex};

const MAGIC: &str = "gitops-stat-cache";
const VERSION: u32 = 2;
const VERSION_TEXT: &str = "2";
/// Fields before the path on an entry line.
const FIELDS: usize = 12;

/// Why a cache file is not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum CacheFileError {
    /// It cannot be read (missing is the common case).
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    /// Not a cache of this version for this root.
    #[error("header: {0}")]
    Header(&'static str),
    /// The trailer is missing or does not match the content.
    #[error("trailer: {0}")]
    Trailer(&'static str),
    /// An entry line does not parse.
    #[error("line {line}: {what}")]
    Line {
        /// One-based line number.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    out: W,
    hasher: Sha256,
}

impl<W: io::Write> io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The entries of a cache file and its epoch.
pub(super) type Loaded = (Entries, String);

/// Writes the cache for `entries` (sorted by path) at `epoch` to `out`.
fn write_to(out: impl io::Write, root: RootId, epoch: &str, entries: &Entries) -> io::Result<()> {
    let mut paths: Vec<&Box<str>> = entries.keys().collect();
    paths.sort_unstable();
    let mut out = Hashing {
        out,
        hasher: Sha256::new(),
    };
    writeln!(
        out,
        "{MAGIC} {VERSION} {} {} {} {epoch}",
        root.0,
        root.1,
        entries.len()
    )?;
    for path in paths {
        let e = &entries[path];
        let k = &e.key;
        writeln!(
            out,
            "{} {} {} {} {} {} {} {} {} {:o} {} {} {path}",
            hex(&e.digest),
            if e.trusted { 't' } else { 'u' },
            k.dev,
            k.ino,
            k.size,
            k.mtime.sec,
            k.mtime.nsec,
            k.ctime.sec,
            k.ctime.nsec,
            k.mode,
            e.recorded.sec,
            e.recorded.nsec,
        )?;
    }
    let digest = hex(&out.hasher.finalize_reset());
    writeln!(out.out, "end {} {digest}", entries.len())?;
    out.out.flush()
}

/// The file's text for `entries`.
#[cfg(test)]
fn encode(root: RootId, entries: &Entries) -> String {
    let mut out = Vec::new();
    let _ = write_to(&mut out, root, EPOCH, entries);
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_entry(line: &str) -> Option<(Box<str>, Entry)> {
    let fields: Vec<&str> = line.splitn(FIELDS + 1, ' ').collect();
    let [
        digest,
        trusted,
        dev,
        ino,
        size,
        m_s,
        m_ns,
        c_s,
        c_ns,
        mode,
        r_s,
        r_ns,
        path,
    ] = fields.as_slice()
    else {
        return None;
    };
    let trusted = match *trusted {
        "t" => true,
        "u" => false,
        _ => return None,
    };
    let time = |sec: &str, nsec: &str| {
        let sec = sec.parse::<i64>().ok()?;
        let nsec = nsec.parse::<u32>().ok().filter(|n| *n < 1_000_000_000)?;
        Some(Time { sec, nsec })
    };
    let key = StatKey {
        dev: dev.parse().ok()?,
        ino: ino.parse().ok()?,
        size: size.parse().ok()?,
        mtime: time(m_s, m_ns)?,
        ctime: time(c_s, c_ns)?,
        mode: u32::from_str_radix(mode, 8).ok()?,
    };
    if path.is_empty() {
        return None;
    }
    let entry = Entry {
        key,
        digest: unhex(digest)?,
        trusted,
        recorded: time(r_s, r_ns)?,
        hits: 0,
    };
    Some(((*path).into(), entry))
}

/// Checks the header line against `root`; the number of entries it
/// announces and the epoch.
fn check_header(line: &str, root: RootId) -> Result<(usize, String), CacheFileError> {
    let mut fields = line.strip_suffix('\n').unwrap_or_default().split(' ');
    if (fields.next(), fields.next()) != (Some(MAGIC), Some(VERSION_TEXT)) {
        return Err(CacheFileError::Header("not a stat cache of this version"));
    }
    let number = |field: Option<&str>| field.and_then(|f| f.parse::<u64>().ok());
    let (dev, ino) = (number(fields.next()), number(fields.next()));
    let count = number(fields.next()).and_then(|c| usize::try_from(c).ok());
    let epoch = fields.next().filter(|e| is_epoch(e));
    match (dev, ino, count, epoch, fields.next()) {
        (Some(dev), Some(ino), Some(count), Some(epoch), None) if (dev, ino) == root => {
            Ok((count, epoch.to_owned()))
        }
        (Some(_), Some(_), Some(_), Some(_), None) => {
            Err(CacheFileError::Header("written for another root directory"))
        }
        _ => Err(CacheFileError::Header("malformed")),
    }
}

/// Whether `text` is an epoch: 32 lower-case hex digits.
pub(super) fn is_epoch(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks the trailer line against the hash of the lines before it.
fn check_trailer(line: &str, hasher: Sha256, entries: usize) -> Result<(), CacheFileError> {
    let mut fields = line.trim_end_matches('\n').split(' ');
    let (Some("end"), Some(count), Some(digest), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(CacheFileError::Trailer("missing or malformed"));
    };
    if hex(&hasher.finalize()) != digest {
        return Err(CacheFileError::Trailer("checksum mismatch"));
    }
    if count.parse::<usize>().ok() != Some(entries) {
        return Err(CacheFileError::Trailer("entry count mismatch"));
    }
    Ok(())
}

/// The entries `input` holds, if it is a whole, unedited cache for `root`
/// with at most `max` entries. Read line by line: never the whole file at once.
fn read_from(
    mut input: impl io::BufRead,
    root: RootId,
    max: usize,
) -> Result<Loaded, CacheFileError> {
    let mut hasher = Sha256::new();
    let mut line = String::new();
    input.read_line(&mut line)?;
    let (announced, epoch) = check_header(&line, root)?;
    hasher.update(line.as_bytes());
    // Sized once: growing a table of 20,000 entries holds two at a time.
    let mut entries = Entries::with_capacity(announced.min(max));
    // The last line is the trailer: each line is parsed once the next one
    // shows it was not the last.
    let mut pending = String::new();
    input.read_line(&mut pending)?;
    let mut number = 2;
    loop {
        number += 1;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return check_trailer(&pending, hasher, entries.len()).map(|()| (entries, epoch));
        }
        let bad = |what| CacheFileError::Line {
            line: number - 1,
            what,
        };
        hasher.update(pending.as_bytes());
        let text = pending
            .strip_suffix('\n')
            .ok_or_else(|| bad("unterminated"))?;
        let (path, entry) = parse_entry(text).ok_or_else(|| bad("does not parse"))?;
        if entries.len() >= max {
            return Err(bad("more entries than the target's file limit"));
        }
        if entries.insert(path, entry).is_some() {
            return Err(bad("duplicate path"));
        }
        std::mem::swap(&mut pending, &mut line);
    }
}

/// The entries in `text` (see [`read_from`]).
#[cfg(test)]
fn decode(text: &str, root: RootId, max: usize) -> Result<Entries, CacheFileError> {
    read_from(text.as_bytes(), root, max).map(|(entries, _)| entries)
}

/// The epoch the tests write.
#[cfg(test)]
const EPOCH: &str = "0123456789abcdef0123456789abcdef";

/// Reads `file` (see [`read_from`]).
pub(super) fn read(file: &Path, root: RootId, max: usize) -> Result<Loaded, CacheFileError> {
    read_from(io::BufReader::new(std::fs::File::open(file)?), root, max)
}

/// Writes `entries` to `file` atomically: `<file>.tmp`, then a rename.
pub(super) fn write(file: &Path, root: RootId, epoch: &str, entries: &Entries) -> io::Result<()> {
    let mut temp = file.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = Path::new(&temp);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let written = (|| {
        let out = io::BufWriter::new(std::fs::File::create(temp)?);
        write_to(out, root, epoch, entries)?;
        std::fs::rename(temp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(trusted: bool) -> Entry {
        let t = Time {
            sec: 1_700_000_000,
            nsec: 123,
        };
        Entry {
            key: StatKey {
                dev: 2049,
                ino: 77,
                size: 12,
                mtime: t,
                ctime: t,
                mode: 0o100644,
            },
            digest: [0xab; 32],
            trusted,
            recorded: Time {
                sec: t.sec + 5,
                nsec: 0,
            },
            hits: 0,
        }
    }

    fn sample() -> Entries {
        Entries::from([
            ("etc/app.conf".into(), entry(true)),
            ("dir with space/b c".into(), entry(false)),
        ])
    }

    #[test]
    fn round_trips() {
        let text = encode((1, 2), &sample());
        assert_eq!(decode(&text, (1, 2), 10).expect("decodes"), sample());
        assert!(text.starts_with(&format!("gitops-stat-cache 2 1 2 2 {EPOCH}\n")));
        assert!(text.contains(" 100644 "), "modes in octal: {text}");
    }

    #[test]
    fn anything_but_a_whole_cache_for_this_root_is_refused() {
        let text = encode((1, 2), &sample());
        let refused = |t: &str| decode(t, (1, 2), 10).expect_err("refused").to_string();
        assert!(
            refused(&text[..text.len() - 10]).contains("trailer"),
            "truncated"
        );
        assert!(
            refused(&text.replace(" t ", " u ")).contains("checksum"),
            "edited"
        );
        assert!(refused("").contains("header"));
        assert!(refused("garbage\n").contains("header"));
        let header_only = format!("gitops-stat-cache 2 1 2 0 {EPOCH}\n");
        assert!(refused(&header_only).contains("trailer"));
        let version_1 = "gitops-stat-cache 1 1 2 0\nend 0 x\n";
        assert!(refused(version_1).contains("header"), "no epoch: refused");
        let bad_epoch = text.replacen(EPOCH, "xyz", 1);
        assert!(refused(&bad_epoch).contains("header"));
        let other_root = decode(&text, (1, 3), 10).expect_err("refused");
        assert!(matches!(other_root, CacheFileError::Header(_)));
        assert!(decode(&text, (1, 2), 1).is_err(), "over the limit");
        // A line that does not parse, with a matching checksum.
        let body = format!("gitops-stat-cache 2 1 2 1 {EPOCH}\nnonsense\n");
        let forged = format!("{body}end 1 {}\n", hex(&Sha256::digest(body.as_bytes())));
        assert!(refused(&forged).contains("line 2"));
    }

    #[test]
    fn writes_atomically_into_a_new_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state/fs/stat-cache");
        write(&file, (1, 2), EPOCH, &sample()).expect("writes");
        let read_back = read(&file, (1, 2), 10).expect("reads");
        assert_eq!(read_back, (sample(), EPOCH.to_owned()));
        assert!(!dir.path().join("state/fs/stat-cache.tmp").exists());
        assert!(matches!(
            read(&dir.path().join("missing"), (1, 2), 10),
            Err(CacheFileError::Io(_))
        ));
    }
}
