//! Which applications a push webhook is about: its `ref` against each
//! application's [`RefFilter`], and the repository URLs in its payload
//! (GitHub's `repository.clone_url`, `ssh_url`, ...; GitLab's
//! `project.git_http_url`, ...) against each application's repository,
//! compared as [`repo_key`]s. A payload that names no repository matches
//! every application whose ref matches.

use serde_json::Value;

use super::refs::RefFilter;

/// What a push webhook says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Push {
    /// The full ref pushed (`refs/heads/main`).
    pub(crate) reference: String,
    /// The repository, as [`repo_key`]s of every URL the payload gives.
    pub(crate) repos: Vec<String>,
}

/// Keys of the payload's `repository` and `project` objects that hold a URL.
const URL_KEYS: &[&str] = &[
    "clone_url",
    "ssh_url",
    "git_url",
    "html_url",
    "url",
    "git_http_url",
    "git_ssh_url",
    "http_url",
    "ssh_url_to_repo",
    "http_url_to_repo",
    "web_url",
    "homepage",
];

/// Reads a push payload: its `ref` (required) and repository URLs.
pub(crate) fn parse(body: &[u8]) -> Result<Push, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("a push event needs a JSON body with a \"ref\": {e}"))?;
    let reference = value
        .get("ref")
        .and_then(Value::as_str)
        .ok_or("a push event needs a JSON body with a \"ref\"")?
        .to_owned();
    let mut repos: Vec<String> = ["repository", "project"]
        .iter()
        .filter_map(|object| value.get(object))
        .flat_map(|object| URL_KEYS.iter().filter_map(|k| object.get(k)))
        .filter_map(Value::as_str)
        .filter(|url| !url.is_empty())
        .map(repo_key)
        .collect();
    repos.sort();
    repos.dedup();
    Ok(Push { reference, repos })
}

/// A repository URL in a form that the URLs of one repository share:
/// no scheme, user, default port (22, 80, 443, 9418), trailing `/` or
/// `.git`, the host in lower case;
/// `git@host:org/repo.git`, `ssh://git@host:22/org/repo`,
/// `https://host/org/repo.git` all become `host/org/repo`. A local path
/// stays a path.
///
/// ```
/// use gitops_agent::http::repo_key;
/// assert_eq!(repo_key("git@GitHub.com:org/ops.git"), "github.com/org/ops");
/// assert_eq!(repo_key("https://bot@github.com/org/ops/"), "github.com/org/ops");
/// assert_eq!(repo_key("ssh://git@github.com:22/org/ops.git"), "github.com/org/ops");
/// assert_eq!(repo_key("file:///srv/git/ops.git"), "/srv/git/ops");
/// ```
pub fn repo_key(url: &str) -> String {
    let url = url.trim();
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        },
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') && !host.is_empty() => (host, path),
            _ => ("", url),
        },
    };
    let host = authority
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    // A scheme's default port names the same server as no port.
    let host = match host.rsplit_once(':') {
        Some((name, "22" | "80" | "443" | "9418")) => name.to_owned(),
        _ => host,
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    if host.is_empty() {
        return path.to_owned();
    }
    format!("{host}/{}", path.trim_start_matches('/'))
}

/// The applications `push` is about, among `(name, refs, repo key)`.
pub(crate) fn matching<'a>(
    push: &Push,
    apps: impl IntoIterator<Item = (&'a str, &'a RefFilter, Option<&'a str>)>,
) -> Vec<String> {
    apps.into_iter()
        .filter(|(_, refs, _)| refs.matches(&push.reference))
        .filter(|(_, _, repo)| {
            push.repos.is_empty() || repo.is_none_or(|r| push.repos.iter().any(|p| p == r))
        })
        .map(|(name, _, _)| name.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_s_urls_share_a_key() {
        let key = "git.example/org/ops";
        for url in [
            "https://git.example/org/ops.git",
            "https://git.example:443/org/ops",
            "git@git.example:org/ops.git",
            "ssh://git@git.example/org/ops.git",
            "git://git.example/org/ops.git/",
        ] {
            assert_eq!(repo_key(url), key, "{url}");
        }
        assert_eq!(repo_key("/srv/git/ops.git"), "/srv/git/ops");
        assert_ne!(repo_key("https://git.example/org/ops2"), key);
        assert_eq!(repo_key("http://127.0.0.1:8080/a.git"), "127.0.0.1:8080/a");
        assert_ne!(repo_key("http://127.0.0.1:8081/a.git"), "127.0.0.1:8080/a");
    }

    #[test]
    fn github_and_gitlab_payloads_name_their_repository() {
        let github = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/o/r.git","ssh_url":"git@github.com:o/r.git"}}"#;
        let push = parse(github).expect("push");
        assert_eq!(push.reference, "refs/heads/main");
        assert_eq!(push.repos, ["github.com/o/r"]);
        let gitlab = br#"{"ref":"refs/tags/v1","project":{"git_http_url":"https://gitlab.example/g/r.git"}}"#;
        assert_eq!(parse(gitlab).expect("push").repos, ["gitlab.example/g/r"]);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"no json").is_err());
    }

    #[test]
    fn pushes_match_by_ref_and_repository() {
        let main = RefFilter::Branch("main".into());
        let tags = RefFilter::Tags;
        let apps = [
            ("db", &main, Some("host/ops")),
            ("web", &main, Some("host/web")),
            ("flags", &tags, Some("host/ops")),
            ("any", &main, None),
        ];
        let push = Push {
            reference: "refs/heads/main".into(),
            repos: vec!["host/ops".into()],
        };
        assert_eq!(matching(&push, apps), ["db", "any"]);
        let anonymous = Push {
            reference: "refs/heads/main".into(),
            repos: Vec::new(),
        };
        assert_eq!(matching(&anonymous, apps), ["db", "web", "any"]);
    }
}
