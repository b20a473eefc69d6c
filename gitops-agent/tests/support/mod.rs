//! What the gitops-agent integration tests share. Each test binary uses a
//! part of it.
#![allow(dead_code)]

pub mod agent;
pub mod git_server;
pub mod http;
pub mod prometheus;
pub mod receiver;
