//! Talking to the remote: per-operation configuration, HTTP options,
//! credentials for gix, and gix errors mapped onto [`SourceError`].

use std::sync::{Arc, Mutex};

use gitops_core::SourceError;
use gix::bstr::ByteSlice;

use crate::credentials::{Credentials, scrub};
use crate::error::{GitError, chain};

use super::Inner;

/// Configures the thread-local repository for one network operation.
pub(super) fn configure(
    repo: &mut gix::Repository,
    inner: &Inner,
    credentials: Option<&Credentials>,
) -> gix::Result<()> {
    let mut values: Vec<String> = Vec::new();
    if let Some(cmd) = inner.ssh.command_line() {
        values.push(format!("core.sshCommand={cmd}"));
    }
    if let Some(Credentials::Bearer(token)) = credentials {
        values.push(format!(
            "http.extraHeader=Authorization: Bearer {}",
            token.expose()
        ));
    }
    let connect_ms = inner.fetch_timeout.as_millis().min(u128::from(u32::MAX));
    values.push(format!("gitoxide.http.connectTimeout={connect_ms}"));
    let mut config = repo.config_snapshot_mut();
    config.append_config(values.iter().map(String::as_str), gix::config::Source::Api)?;
    config.commit()?;
    Ok(())
}

/// HTTP transport options from the repository configuration, plus a whole-request
/// timeout (reqwest's default has none, so a silent server would hang a fetch).
pub(super) fn http_options(
    repo: &gix::Repository,
    inner: &Inner,
) -> gix::Result<Option<Box<dyn std::any::Any>>> {
    use gix::protocol::transport::client::blocking_io::http;
    if !matches!(
        inner.url.scheme,
        gix::url::Scheme::Http | gix::url::Scheme::Https
    ) {
        return Ok(None);
    }
    let url = inner.url.to_bstring();
    let Some(options) = repo.transport_options(url.as_bstr(), None)? else {
        return Ok(None);
    };
    let Ok(mut options) = options.downcast::<http::Options>() else {
        return Ok(None);
    };
    let timeout = inner.fetch_timeout;
    // gix's reqwest backend ignores `http.sslCAInfo` (only its curl backend
    // reads `ssl_ca_info`): extra roots go to the client directly.
    let roots = inner
        .ca
        .as_ref()
        .map(|ca| ca.certificates.clone())
        .unwrap_or_default();
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            let builder = roots
                .iter()
                .cloned()
                .fold(builder, |b, root| b.add_root_certificate(root));
            Ok(builder.timeout(timeout).connect_timeout(timeout))
        })),
        configure_request: None,
    };
    options.backend = Some(Arc::new(Mutex::new(backend)));
    Ok(Some(options))
}

/// Maps a gix error of the network phase onto a [`SourceError`], with every
/// secret scrubbed from the message.
pub(super) fn remote_error(
    inner: &Inner,
    err: &gix::Error,
    secrets: &[String],
    credentials: Option<&Credentials>,
) -> SourceError {
    let mut message = scrub(&chain(err), secrets);
    if message.contains("No credentials were returned") {
        // gix asked for basic credentials after a 401; say what really happened.
        message = match credentials {
            Some(Credentials::Bearer(_)) => {
                "the bearer token was not accepted by the remote (HTTP 401)".to_owned()
            }
            _ => "the remote requires credentials and none are configured (or ssh was refused)"
                .to_owned(),
        };
    }
    if message.contains("Will not send credentials in clear text over http") {
        message = "basic credentials over plain http:// need gitops-git's cargo feature \
                   `insecure-http-credentials` (gix refuses them without it)"
            .to_owned();
    }
    let location = inner.location.clone();
    let auth = err.is_unauthenticated() || err.is_permission_denied() || says_auth_failed(&message);
    if auth {
        return SourceError::Authentication { location, message };
    }
    let permanent = err.is_validation() || err.is_unsupported();
    let detail = GitError::Remote {
        location: location.clone(),
        message: message.clone(),
        transient: !permanent,
    };
    if permanent {
        SourceError::Other {
            message: format!("fetch from {location} failed: {message}"),
            transient: false,
            source: Some(Box::new(detail)),
        }
    } else {
        SourceError::Unavailable {
            location,
            message,
            source: Some(Box::new(detail)),
        }
    }
}

/// Whether a fetch error's text says the remote refused who we are. HTTP's
/// phrases only, never a bare number: "403" is also in ports
/// (127.0.0.1:40391) and commit ids, and once made a 503 permanent.
fn says_auth_failed(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "status 401",
        "status 403",
        "401 unauthorized",
        "403 forbidden",
        "authentication",
        "permission denied (publickey",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
}

/// The answer to gix's credential requests: the configured basic
/// credentials, if any (bearer tokens travel in a header instead), and
/// never a prompt.
pub(super) fn answer_basic(
    credentials: Option<&Credentials>,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>>
+ Send
+ Sync
+ 'static {
    let basic = match credentials {
        Some(Credentials::Basic { username, password }) => {
            Some((username.clone(), password.expose().to_owned()))
        }
        _ => None,
    };
    move |action| match action {
        gix::credentials::helper::Action::Get(context) => {
            Ok(basic
                .as_ref()
                .map(|(u, p)| gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: u.clone(),
                        password: p.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::says_auth_failed;

    #[test]
    fn only_http_phrases_mean_an_authentication_failure() {
        for refused in [
            "received HTTP status 401 from http://127.0.0.1:8080/app.git",
            "HTTP 403 Forbidden",
            "Authentication failed for 'https://git.example/app.git'",
            "git@host: Permission denied (publickey).",
        ] {
            assert!(says_auth_failed(refused), "{refused}");
        }
        for other in [
            // The port holds 403 and 401; the status is 503.
            "received HTTP status 503 from http://127.0.0.1:40391/app.git",
            "http://127.0.0.1:44013/app.git: connection refused",
            "object 4030a1b2 not found",
        ] {
            assert!(!says_auth_failed(other), "{other}");
        }
    }
}
