//! Secrets with age through the `gitops-agent` binary, against a real Git
//! repository and target directory: `.age` files encrypted by the real
//! `age` CLI deploy decrypted with mode 0600; the plan, the `--once`
//! report, debug logs and the state directory never hold the plaintext;
//! drift is reverted; a tampered file or a missing identity refuses the
//! run naming the file, and the last good state stays.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use support::age::{encrypt, ssh_ed25519, x25519};
use support::git_server::{Dirs, Repo, agent, files_containing, text};

const SECRET: &str = "hunter2-correct-horse";
const TOKEN: &str = "api-token-8c1f9e";
const DRIFTED: &str = "typed-by-hand-0xdeadbeef";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("meta").permissions().mode() & 0o7777
}

fn assert_clean(what: &str, out: &Output) {
    let (stdout, stderr) = text(out);
    for needle in [SECRET, TOKEN, DRIFTED] {
        assert!(
            !stdout.contains(needle),
            "{what} stdout leaks {needle}:\n{stdout}"
        );
        assert!(
            !stderr.contains(needle),
            "{what} stderr leaks {needle}:\n{stderr}"
        );
    }
}

fn assert_state_clean(dirs: &Dirs) {
    for needle in [SECRET, TOKEN, DRIFTED] {
        let found = files_containing(&dirs.state, needle.as_bytes());
        assert!(found.is_empty(), "{needle} is in {found:?}");
    }
}

#[test]
fn encrypted_files_deploy_private_and_never_leak() {
    let keys = tempfile::tempdir().expect("keys");
    let (key, other, ssh) = (
        x25519(keys.path(), "key"),
        x25519(keys.path(), "other"),
        ssh_ed25519(keys.path(), "id_ed25519"),
    );
    let armored = encrypt(&[&other, &key], true, format!("{SECRET}\n").as_bytes());
    let repo = Repo::with_files(&[
        ("app.conf", "port = 80\n"),
        ("db.pass.age", std::str::from_utf8(&armored).expect("armor")),
    ]);
    // A binary age file to an SSH recipient, beside it.
    std::fs::write(
        repo.work().join("api.token.age"),
        encrypt(&[&ssh], false, TOKEN.as_bytes()),
    )
    .expect("write");
    repo.commit(&[], "add the api token");
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let identities = format!("{};{}", key.identity.display(), ssh.identity.display());
    let run = |args: &[&str]| {
        agent(&url, &dirs, "debug")
            .env("GITOPS_AGE_IDENTITY", &identities)
            .args(args)
            .output()
            .expect("run")
    };

    let plan = run(&["--plan", "--full"]);
    assert_eq!(plan.status.code(), Some(2), "{:?}", text(&plan));
    assert!(text(&plan).0.contains("(sensitive)"), "{}", text(&plan).0);
    assert_clean("create plan", &plan);
    let once = run(&["--once"]);
    assert!(once.status.success(), "{:?}", text(&once));
    assert_clean("first --once", &once);
    let (db, api) = (dirs.target.join("db.pass"), dirs.target.join("api.token"));
    assert_eq!(
        std::fs::read_to_string(&db).expect("db"),
        format!("{SECRET}\n")
    );
    assert_eq!(std::fs::read_to_string(&api).expect("api"), TOKEN);
    assert_eq!((mode(&db), mode(&api)), (0o600, 0o600));
    assert_eq!(mode(&dirs.target.join("app.conf")), 0o644);
    assert!(!dirs.target.join("db.pass.age").exists());
    assert_eq!(mode(&dirs.state.join("digest.key")), 0o600);

    // Drift: shown as (sensitive), reverted.
    std::fs::write(&db, DRIFTED).expect("hand edit");
    let plan = run(&["--plan", "--full"]);
    assert_eq!(plan.status.code(), Some(2), "{:?}", text(&plan));
    let shown = text(&plan).0;
    assert!(
        shown.contains("spec.content") && shown.contains("(sensitive)"),
        "{shown}"
    );
    assert_clean("drift plan", &plan);
    let once = run(&["--once"]);
    assert!(once.status.success(), "{:?}", text(&once));
    assert_clean("drift --once", &once);
    assert_eq!(
        std::fs::read_to_string(&db).expect("db"),
        format!("{SECRET}\n")
    );
    assert_eq!(mode(&db), 0o600);
    assert_state_clean(&dirs);

    // A tampered file refuses the revision whole, naming the file.
    let mut tampered = encrypt(&[&key], false, b"new secret");
    let at = tampered.len() - 3;
    tampered[at] ^= 0x20;
    std::fs::write(repo.work().join("db.pass.age"), tampered).expect("write");
    repo.commit(&[("app.conf", "port = 81\n")], "tampered");
    let once = run(&["--once"]);
    assert!(!once.status.success());
    let (_, stderr) = text(&once);
    assert!(stderr.contains("db.pass.age"), "{stderr}");
    assert_clean("refused --once", &once);
    assert_eq!(
        std::fs::read_to_string(dirs.target.join("app.conf")).expect("app"),
        "port = 80\n",
        "nothing written"
    );
    assert_eq!(
        std::fs::read_to_string(&db).expect("db"),
        format!("{SECRET}\n")
    );

    // A missing identity file: refused at start, naming the file.
    let missing = keys.path().join("missing.txt");
    let out = agent(&url, &dirs, "info")
        .arg("--age-identity")
        .arg(&missing)
        .arg("--once")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(text(&out).1.contains("missing.txt"), "{:?}", text(&out));
    assert_state_clean(&dirs);
}

#[test]
fn manifests_from_encrypted_files_are_sensitive() {
    let keys = tempfile::tempdir().expect("keys");
    let key = x25519(keys.path(), "key");
    let yaml = format!("kind: File\nmetadata: {{ name: x }}\nspec: {{ password: {SECRET} }}\n");
    let armored = encrypt(&[&key], true, yaml.as_bytes());
    let repo = Repo::with_files(&[(
        "secret.yaml.age",
        std::str::from_utf8(&armored).expect("armor"),
    )]);
    let dirs = Dirs::new();
    let url = format!("file://{}", repo.root.join("app.git").display());
    let plan = agent(&url, &dirs, "debug")
        .args([
            "--render",
            "manifests",
            "--plan",
            "--full",
            "--age-identity",
        ])
        .arg(&key.identity)
        .output()
        .expect("run");
    let (stdout, _) = text(&plan);
    assert!(
        stdout.contains("(sensitive)") && stdout.contains("File/x"),
        "{stdout}"
    );
    assert_clean("manifest plan", &plan);
    assert_state_clean(&dirs);
}
