//! Against a real etcd of its own with TLS (server and client certificates
//! made here by `openssl`) and authentication on: connecting with a user
//! and password, what a wrong password, an untrusted server and a missing
//! permission produce, and that no error or `Debug` output shows the secret.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_core::model::Inventory;
use gitops_core::testing::MemorySource;
use gitops_core::{Engine, ManifestRender, StateStore};
use gitops_etcd::{EtcdClient, EtcdConfig, EtcdStore, EtcdTarget, TlsConfig};

const PASSWORD: &str = "s3cret-Pa55word";
const ROOT_PASSWORD: &str = "r00t-Pa55word";

fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A CA, and a certificate it signs for `name` (`server` or a client).
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gitops-test-ca",
    ]);
    run("openssl", &ca, dir);
    for (name, usage, alt) in [
        (
            "server",
            "serverAuth,clientAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        ),
        ("client", "clientAuth", ""),
    ] {
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN={name}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        run("openssl", &req, dir);
        std::fs::write(dir.join(&ext), format!("{alt}extendedKeyUsage={usage}\n")).expect("ext");
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            dir,
        );
    }
}

/// An etcd with TLS, client certificates and authentication on: users
/// `root`, `app` (read-write under `/gitops/`) and `reader` (read-only).
struct SecureEtcd {
    dir: tempfile::TempDir,
    endpoint: String,
    process: Child,
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl SecureEtcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        certificates(dir.path());
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let process = Command::new("etcd")
            .args(["--name", "secure", "--data-dir", "data"])
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("secure={peer_url}")])
            .args(["--cert-file", "server.pem", "--key-file", "server.key"])
            .args(["--trusted-ca-file", "ca.pem", "--client-cert-auth"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (scripts/test installs etcd-server)");
        let etcd = Self {
            dir,
            endpoint,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd.etcdctl_ok(&["endpoint", "health"]) {
            assert!(
                Instant::now() < deadline,
                "the TLS etcd did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let password = |p: &str| format!("--new-user-password={p}");
        for args in [
            vec!["user", "add", "root", &password(ROOT_PASSWORD)],
            vec!["role", "add", "app"],
            vec![
                "role",
                "grant-permission",
                "app",
                "--prefix=true",
                "readwrite",
                "/gitops/",
            ],
            vec!["user", "add", "app", &password(PASSWORD)],
            vec!["user", "grant-role", "app", "app"],
            vec!["role", "add", "reader"],
            vec![
                "role",
                "grant-permission",
                "reader",
                "--prefix=true",
                "read",
                "/gitops/",
            ],
            vec!["user", "add", "reader", &password(PASSWORD)],
            vec!["user", "grant-role", "reader", "reader"],
            vec!["auth", "enable"],
        ] {
            assert!(etcd.etcdctl_ok(&args), "etcdctl {args:?} failed");
        }
        etcd
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn etcdctl_ok(&self, args: &[&str]) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "--cacert", "ca.pem"])
            .args(["--cert", "client.pem", "--key", "client.key"])
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn tls(&self) -> TlsConfig {
        let read = |file: &str| std::fs::read(self.path(file)).expect("pem");
        TlsConfig {
            ca_pem: Some(read("ca.pem")),
            identity: Some((read("client.pem"), read("client.key"))),
            domain: None,
        }
    }

    fn config(&self, user: &str, password: &str) -> EtcdConfig {
        EtcdConfig::new([self.endpoint.clone()])
            .with_tls(self.tls())
            .with_user(user, password)
    }
}

fn secret_free(text: &str) {
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    assert!(!text.contains("BEGIN"), "key material leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_user_deploys_and_a_secret_never_shows() {
    let etcd = SecureEtcd::start();

    // The right user over mutual TLS: an engine keeps its state in etcd and
    // deploys into it.
    let config = etcd.config("app", PASSWORD);
    secret_free(&format!("{config:?}"));
    let client = EtcdClient::connect(&config).await.expect("connects");
    let store = Arc::new(EtcdStore::new(client.clone(), "/gitops/state"));
    let source = Arc::new(MemorySource::new("main"));
    source.commit([(
        "app.yaml",
        "kind: Key\nmetadata: { name: greeting }\nspec: { format: text, value: hello }\n",
    )]);
    let engine = Engine::builder()
        .name("web")
        .source(source)
        .render(Arc::new(ManifestRender::new()))
        .target(Arc::new(EtcdTarget::new(client.clone(), "/gitops/keys")))
        .store(store.clone())
        .build()
        .expect("engine");
    let report = engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    let inventory = store.load_inventory("web").await.expect("inventory");
    assert_eq!(inventory.value.len(), 1);

    // A wrong password: refused at connect, not worth retrying, no secret.
    let err = EtcdClient::connect(&etcd.config("app", "wrong-Pa55word"))
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("wrong-Pa55word"), "{text}");
    assert!(
        !err.is_transient(),
        "a wrong password does not heal: {text}"
    );

    // A server the client cannot verify: the CA was not given.
    let mut untrusted = etcd.config("app", PASSWORD);
    if let Some(tls) = untrusted.tls.as_mut() {
        tls.ca_pem = None;
    }
    let err = EtcdClient::connect(&untrusted)
        .await
        .expect_err("server not trusted");
    let text = err.to_string();
    assert!(text.contains(&etcd.endpoint), "{text}");
    secret_free(&text);
    secret_free(&format!("{err:?}"));

    // A user allowed to read only: the write names the key and says why.
    // (It stays a retried error: the fix, granting the permission, happens
    // outside Git, and the engine picks it up on its next attempt.)
    let reader = EtcdClient::connect(&etcd.config("reader", PASSWORD))
        .await
        .expect("reader connects");
    let store = EtcdStore::new(reader, "/gitops/state");
    let err = store
        .save_inventory("ro", &Inventory::new(), 0, &[])
        .await
        .expect_err("read-only user");
    let text = err.to_string();
    assert!(text.contains("/gitops/state"), "{text}");
    assert!(text.contains("permission denied"), "{text}");
    secret_free(&format!("{err:?}"));

    // Outside its prefix even the app user may not read.
    let err = EtcdStore::new(client, "/elsewhere")
        .load_inventory("web")
        .await
        .expect_err("outside the granted prefix");
    assert!(err.to_string().contains("permission denied"), "{err}");
}
