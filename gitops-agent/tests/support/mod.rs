//! What the gitops-agent integration tests share. Each test binary uses a
//! part of it.
#![allow(dead_code)]

/// A loopback port free right now (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The real `age` and `ssh-keygen` CLIs, shared with gitops-core's tests.
#[path = "../../../gitops-core/tests/support/age.rs"]
pub mod age;
pub mod apps;
pub mod git_server;
/// gitops-git's throw-away GnuPG home, shared by path rather than copied.
#[path = "../../../gitops-git/tests/support/gpg.rs"]
pub mod gpg;
pub mod http;
pub mod prometheus;
pub mod receiver;
pub mod replicas;
pub mod webdriver;
