//! Encrypted files with the real `age` CLI: `Decrypt` over the files and
//! manifests renders (X25519 and ssh-ed25519 recipients, armored and
//! binary, several recipients), and bad input refused whole, naming the
//! file and never a key.

mod support;

use std::path::Path;

use gitops_core::decrypt::{AgeError, Decrypt, Identities, Recipients};
use gitops_core::{
    FileEdit, FilesRender, ManifestRender, Observed, Render, RenderError, Revision, Snapshot,
    SnapshotFile, serde_json::json,
};
use support::age::{Key, decrypt, encrypt, ssh_ed25519, x25519};

const SECRET: &str = "hunter2-correct-horse";

fn snapshot(files: Vec<(&str, Vec<u8>)>) -> Snapshot {
    Snapshot::from_files(Revision::new("main", "a".repeat(40)), files).expect("snapshot")
}

fn identities(keys: &[&Key]) -> Identities {
    let mut ids = Identities::new();
    for key in keys {
        ids.add_file(&key.identity).expect("identity file");
    }
    ids
}

#[test]
fn files_mode_decrypts_every_kind_of_age_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b, ssh) = (
        x25519(dir.path(), "a"),
        x25519(dir.path(), "b"),
        ssh_ed25519(dir.path(), "id_ed25519"),
    );
    let snap = snapshot(vec![
        ("plain.conf", b"port = 80\n".to_vec()),
        ("x-binary.pass.age", encrypt(&[&a], false, b"x-binary")),
        ("x-armored.pass.age", encrypt(&[&a], true, b"x-armored")),
        ("ssh.pass.age", encrypt(&[&ssh], true, b"ssh")),
        ("both.pass.age", encrypt(&[&b, &a], false, b"both")),
    ]);
    // One identity of several recipients is enough; SSH and age identities mix.
    for ids in [identities(&[&a, &ssh]), identities(&[&ssh, &b, &a])] {
        let desired = Decrypt::new(FilesRender::new(), ids)
            .render(&snap)
            .expect("renders");
        assert_eq!(desired.len(), 5);
        for r in desired.resources() {
            let name = r.id.name();
            if name == "plain.conf" {
                assert!(!r.sensitive);
                assert_eq!(r.spec.get("mode"), Some(json!("0644")));
                continue;
            }
            let stem = name.strip_suffix(".pass").expect("plain name");
            assert!(r.sensitive, "{name}");
            assert_eq!(r.origin.path, format!("{name}.age"));
            assert_eq!(r.spec.get("path"), Some(json!(name)));
            assert_eq!(r.spec.get("content"), Some(json!(stem)));
            assert_eq!(r.spec.get("mode"), Some(json!("0600")));
        }
    }
}

#[test]
fn manifests_mode_decrypts_then_parses() {
    let dir = tempfile::tempdir().expect("dir");
    let key = x25519(dir.path(), "k");
    let yaml = format!("kind: Secret\nmetadata: {{ name: db }}\nspec: {{ password: {SECRET} }}\n");
    let json = r#"{"kind": "Secret", "metadata": {"name": "api"}, "spec": {"token": "t0k"}}"#;
    let toml = "kind = \"Secret\"\n[metadata]\nname = \"tls\"\n[spec]\nkey = \"k3y\"\n";
    let snap = snapshot(vec![
        (
            "app.yaml",
            b"kind: App\nmetadata: { name: web }\nspec: {}\n".to_vec(),
        ),
        ("db.yaml.age", encrypt(&[&key], true, yaml.as_bytes())),
        ("api.json.age", encrypt(&[&key], false, json.as_bytes())),
        ("tls.toml.age", encrypt(&[&key], true, toml.as_bytes())),
    ]);
    let render = Decrypt::new(ManifestRender::new(), identities(&[&key]));
    let desired = render.render(&snap).expect("renders");
    let shown: Vec<_> = desired
        .resources()
        .iter()
        .map(|r| (r.id.to_string(), r.sensitive, r.origin.path.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("App/web".to_owned(), false, "app.yaml".to_owned()),
            ("Secret/api".to_owned(), true, "api.json.age".to_owned()),
            ("Secret/db".to_owned(), true, "db.yaml.age".to_owned()),
            ("Secret/tls".to_owned(), true, "tls.toml.age".to_owned()),
        ]
    );
    let db = desired.get(&"Secret/db".parse().expect("id")).expect("db");
    assert_eq!(db.spec.get("password"), Some(json!(SECRET)));
}

/// Refused whole: the error names the encrypted file and holds neither
/// the plaintext nor any key.
fn refused(render: &dyn Render, snap: &Snapshot, path: &str, key: &Key) -> String {
    let err = render.render(snap).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(path), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let private = std::fs::read_to_string(&key.identity).expect("key");
    for line in private
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("-----"))
    {
        assert!(!text.contains(line.trim()), "{text}");
    }
    text
}

#[test]
fn bad_files_refuse_the_revision_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (key, other) = (x25519(dir.path(), "k"), x25519(dir.path(), "other"));
    let good = encrypt(&[&key], false, SECRET.as_bytes());
    let render = Decrypt::new(FilesRender::new(), identities(&[&key]));
    let ok = ("ok.conf", b"x".to_vec());

    let foreign = snapshot(vec![ok.clone(), ("s.age", encrypt(&[&other], true, b"x"))]);
    let text = refused(&render, &foreign, "s.age", &key);
    assert!(
        matches!(render.render(&foreign), Err(RenderError::Decrypt { .. })),
        "{text}"
    );

    let truncated = snapshot(vec![
        ok.clone(),
        ("s.age", good[..good.len() - 10].to_vec()),
    ]);
    refused(&render, &truncated, "s.age", &key);

    let mut tampered = good.clone();
    let last = tampered.len() - 5;
    tampered[last] ^= 0x01;
    refused(
        &render,
        &snapshot(vec![ok.clone(), ("s.age", tampered)]),
        "s.age",
        &key,
    );

    let armored = encrypt(&[&key], true, SECRET.as_bytes());
    let text = String::from_utf8(armored).expect("armor is text");
    let broken = text
        .replacen('A', "B", 1)
        .replacen("-----END", "-----XND", 1);
    refused(
        &render,
        &snapshot(vec![ok.clone(), ("s.age", broken.into_bytes())]),
        "s.age",
        &key,
    );

    refused(
        &render,
        &snapshot(vec![ok.clone(), ("s.age", SECRET.into())]),
        "s.age",
        &key,
    );

    let both = snapshot(vec![("s", b"x".to_vec()), ("s.age", good.clone())]);
    refused(&render, &both, "s.age", &key);

    // No identity at all.
    let none = Decrypt::new(FilesRender::new(), Identities::new());
    refused(&none, &snapshot(vec![("s.age", good)]), "s.age", &key);
}

#[test]
fn a_parse_error_in_an_encrypted_manifest_withholds_the_details() {
    let dir = tempfile::tempdir().expect("dir");
    let key = x25519(dir.path(), "k");
    let yaml = format!("kind: Secret\nmetadata: {{ name: db }}\nspec: [ {SECRET}\n");
    let snap = snapshot(vec![(
        "db.yaml.age",
        encrypt(&[&key], true, yaml.as_bytes()),
    )]);
    let render = Decrypt::new(ManifestRender::new(), identities(&[&key]));
    let text = refused(&render, &snap, "db.yaml.age", &key);
    assert!(text.contains("withheld"), "{text}");
}

#[test]
fn identity_files_are_checked_and_named() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing.txt");
    let err = Identities::from_file(&missing).expect_err("missing");
    assert!(matches!(err, AgeError::Read { .. }));
    assert!(err.to_string().contains("missing.txt"), "{err}");

    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "AGE-SECRET-KEY-1NOTAKEY\n").expect("write");
    let err = Identities::from_file(&junk).expect_err("junk");
    assert!(err.to_string().contains("junk.txt"), "{err}");
    assert!(!err.to_string().contains("NOTAKEY"), "{err}");

    let locked = dir.path().join("id_locked");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "passphrase", "-f"])
        .arg(&locked)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let err = Identities::from_file(&locked).expect_err("passphrase");
    assert!(err.to_string().contains("passphrase"), "{err}");

    let key = x25519(dir.path(), "k");
    assert_eq!(Identities::from_file(&key.identity).expect("key").len(), 1);
    assert!(Recipients::parse(["age1nope"]).is_err());
}

/// Write-back of a sensitive file: refused without recipients (never
/// plain text), re-encrypted to the recipients with them.
#[test]
fn write_back_of_a_sensitive_file_is_encrypted_or_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let (key, ops) = (x25519(dir.path(), "k"), ssh_ed25519(dir.path(), "ops"));
    let encrypted = encrypt(&[&key], true, SECRET.as_bytes());
    let snap = snapshot(vec![("db.pass.age", encrypted.clone())]);
    let file = SnapshotFile {
        data: encrypted.into(),
        executable: false,
    };
    let refusing = Decrypt::new(FilesRender::new(), identities(&[&key]));
    let desired = refusing.render(&snap).expect("renders");
    let resource = &desired.resources()[0];
    let observed = Observed::new(
        resource
            .spec
            .edited(|v| v["content"] = json!("changed-secret")),
    );
    let err = refusing
        .write_back(&file, resource, Some(&observed))
        .expect_err("refused");
    assert!(err.to_string().contains("sensitive"), "{err}");
    assert!(!err.to_string().contains("changed-secret"), "{err}");

    let recipients =
        Recipients::parse([key.recipient.as_str(), ops.recipient.as_str()]).expect("recipients");
    let writing =
        Decrypt::new(FilesRender::new(), identities(&[&key])).writeback_recipients(recipients);
    let FileEdit::Write { data, .. } = writing
        .write_back(&file, resource, Some(&observed))
        .expect("written")
    else {
        panic!("not a write");
    };
    assert!(!String::from_utf8_lossy(&data).contains("changed-secret"));
    for identity in [&key.identity, &ops.identity] {
        assert_eq!(decrypt(Path::new(identity), &data), b"changed-secret");
    }
}
