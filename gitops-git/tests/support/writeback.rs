//! Write-back fixtures: a repository with its source, renderer and
//! [`GitWriteback`], reached by path, over HTTP or as a checked-out work
//! tree, and the steps every write-back test takes (poll, drift, write,
//! read the remote back).

use std::sync::Arc;

use gitops_core::writeback::{Drifted, WritebackRequest, WrittenBack};
use gitops_core::{
    Cancel, ManifestRender, Observed, Render, Revision, Source, Writeback, WritebackError,
};
use gitops_git::{GitSource, GitSourceBuilder, GitWriteback, GitWritebackBuilder, ReferencePolicy};

use super::http::HttpServer;
use super::{Fixture, git, runtime};

/// Three documents in one file: `web` (drift policy `writeback`, with
/// comments), `db` and `cache`.
pub const APP: &str = "\
# web tier: scaled by hand in emergencies
kind: App
metadata: { name: web, annotations: { gitops.rs/drift: writeback } }
spec: { replicas: 2 }   # two is plenty
---
# the database: never touched
kind: App
metadata:   { name: db }
spec:  { size: 10 }
---
kind: App
metadata: { name: cache }
spec: { memory: 64 }
";

/// A second manifest, `other`, at version `v`.
pub fn other(v: u32) -> String {
    format!("kind: App\nmetadata: {{ name: other }}\nspec: {{ v: {v} }}\n")
}

/// A fixture whose work repository has `files` committed ("initial").
pub fn fixture(files: &[(&str, &str)]) -> Fixture {
    let fx = Fixture::new();
    fx.commit(files, "initial");
    fx
}

/// How the source reaches the repository.
enum Reach {
    /// The bare remote by its path (pushed first).
    Path,
    /// The bare remote over HTTP (pushed first, pushes allowed), with
    /// optional basic credentials.
    Http(Option<(String, String)>),
    /// The fixture's work repository itself (a checkout).
    WorkTree,
}

type Configure<B> = Box<dyn FnOnce(B) -> B>;

/// Builds a [`Repo`]; see [`Repo::local`], [`Repo::http`], [`Repo::checkout`].
#[must_use]
pub struct RepoBuilder {
    fx: Fixture,
    cache: String,
    reach: Reach,
    render: Arc<dyn Render>,
    source: Configure<GitSourceBuilder>,
    writeback: Configure<GitWritebackBuilder>,
}

impl RepoBuilder {
    /// Renders with `render` instead of a [`ManifestRender`].
    pub fn render(mut self, render: impl Render + 'static) -> Self {
        self.render = Arc::new(render);
        self
    }

    /// The server asks for these basic credentials, and the source has them.
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.reach = Reach::Http(Some((username.to_owned(), password.to_owned())));
        self
    }

    /// More settings of the source (it follows `main`).
    pub fn source(
        mut self,
        f: impl FnOnce(GitSourceBuilder) -> GitSourceBuilder + 'static,
    ) -> Self {
        self.source = Box::new(f);
        self
    }

    /// More settings of the write-back.
    pub fn writeback(
        mut self,
        f: impl FnOnce(GitWritebackBuilder) -> GitWritebackBuilder + 'static,
    ) -> Self {
        self.writeback = Box::new(f);
        self
    }

    /// Publishes the fixture as asked and builds the source and write-back.
    pub fn build(self) -> Repo {
        let fx = self.fx;
        let mut server = None;
        let mut credentials = None;
        let url = match self.reach {
            Reach::Path => {
                fx.push();
                fx.url_path()
            }
            Reach::Http(auth) => {
                fx.push();
                git(&fx.remote, &["config", "http.receivepack", "true"]);
                let basic = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                let started = HttpServer::start(&fx.root, basic, None);
                let url = started.url("repo.git");
                server = Some(started);
                credentials = auth;
                url
            }
            Reach::WorkTree => fx.work.display().to_string(),
        };
        let mut builder = GitSource::builder(url, ReferencePolicy::branch("main"))
            .cache_dir(fx.cache(&self.cache))
            .allow_insecure_http_credentials(true);
        if let Some((username, password)) = credentials {
            builder = builder.credentials(gitops_git::Credentials::basic(username, password));
        }
        let src = (self.source)(builder).build().expect("source");
        let writeback = (self.writeback)(GitWriteback::builder(&src, self.render.clone()))
            .build()
            .expect("writeback");
        Repo {
            fx,
            server,
            rt: runtime(),
            src,
            render: self.render,
            writeback,
        }
    }
}

/// A repository, the source of its `main`, the renderer and a write-back.
pub struct Repo {
    pub fx: Fixture,
    pub server: Option<HttpServer>,
    pub rt: tokio::runtime::Runtime,
    pub src: GitSource,
    pub render: Arc<dyn Render>,
    pub writeback: GitWriteback,
}

impl Repo {
    fn builder(fx: Fixture, cache: &str, reach: Reach) -> RepoBuilder {
        RepoBuilder {
            fx,
            cache: cache.to_owned(),
            reach,
            render: Arc::new(ManifestRender::new()),
            source: Box::new(|b| b),
            writeback: Box::new(|b| b),
        }
    }

    /// The fixture's remote, reached by its path (compare-and-swap of the ref).
    pub fn local(fx: Fixture, cache: &str) -> RepoBuilder {
        Self::builder(fx, cache, Reach::Path)
    }

    /// The fixture's remote, behind `git http-backend` (`git push`).
    pub fn http(fx: Fixture, cache: &str) -> RepoBuilder {
        Self::builder(fx, cache, Reach::Http(None))
    }

    /// The fixture's work repository, with `main` checked out.
    pub fn checkout(fx: Fixture, cache: &str) -> RepoBuilder {
        Self::builder(fx, cache, Reach::WorkTree)
    }

    /// The HTTP server's port.
    pub fn port(&self) -> u16 {
        self.server.as_ref().expect("served over HTTP").port
    }

    /// Polls the source: the deployed revision.
    pub async fn poll(&self) -> Revision {
        self.src.poll().await.expect("poll")
    }

    /// The resource `id` of `revision`, drifted to `spec`.
    pub async fn drifted(&self, revision: &Revision, id: &str, spec: serde_json::Value) -> Drifted {
        drifted(&self.src, &*self.render, revision, id, Some(spec)).await
    }

    /// Polls, and drifts `id` of the polled revision to `spec`.
    pub async fn poll_with_drift(&self, id: &str, spec: serde_json::Value) -> (Revision, Drifted) {
        let deployed = self.poll().await;
        let drifted = self.drifted(&deployed, id, spec).await;
        (deployed, drifted)
    }

    /// Polls, and drifts `App/web` of the polled revision to `replicas`.
    pub async fn web_drift(&self, replicas: u32) -> (Revision, Drifted) {
        self.poll_with_drift("App/web", serde_json::json!({ "replicas": replicas }))
            .await
    }

    /// Writes `drifted` back on top of `revision` with the repository's write-back.
    pub async fn write(
        &self,
        revision: &Revision,
        drifted: &[Drifted],
    ) -> Result<Option<WrittenBack>, WritebackError> {
        write(&self.writeback, revision, drifted).await
    }

    /// Like [`write`](Self::write), and it must make a commit.
    pub async fn commit(&self, revision: &Revision, drifted: &[Drifted]) -> WrittenBack {
        self.write(revision, drifted)
            .await
            .expect("write-back")
            .expect("a commit")
    }

    /// Where the remote's `branch` points.
    pub fn remote_head(&self, branch: &str) -> String {
        git(
            &self.fx.remote,
            &["rev-parse", &format!("refs/heads/{branch}")],
        )
    }

    /// The parent of `commit` in the remote.
    pub fn parent(&self, commit: &str) -> String {
        git(&self.fx.remote, &["rev-parse", &format!("{commit}^")])
    }

    /// A file of `branch` in a fresh clone of the remote, read with the git CLI.
    pub fn clone_file(&self, branch: &str, path: &str) -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CLONES: AtomicUsize = AtomicUsize::new(0);
        let fx = &self.fx;
        let n = CLONES.fetch_add(1, Ordering::SeqCst);
        let dir = fx.dir.path().join(format!("clone-{n}"));
        git(
            fx.dir.path(),
            &[
                "clone",
                "-q",
                "-b",
                branch,
                fx.remote.to_str().expect("utf8"),
                dir.to_str().expect("utf8"),
            ],
        );
        std::fs::read_to_string(dir.join(path)).expect("file in the clone")
    }
}

/// The drifted resource `id` of `revision`, as the target now holds `spec`
/// (`None`: deleted in the target).
pub async fn drifted(
    source: &GitSource,
    render: &dyn Render,
    revision: &Revision,
    id: &str,
    spec: Option<serde_json::Value>,
) -> Drifted {
    let snapshot = source
        .snapshot(revision, &Cancel::new())
        .await
        .expect("snapshot");
    let desired = render.render(&snapshot).expect("render");
    let resource = desired
        .resources()
        .iter()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("{id} in the desired state"))
        .clone();
    Drifted {
        resource,
        observed: spec.map(Observed::new),
    }
}

/// Writes `drifted` back on top of `revision` for the engine `shop`.
pub async fn write(
    writeback: &GitWriteback,
    revision: &Revision,
    drifted: &[Drifted],
) -> Result<Option<WrittenBack>, WritebackError> {
    writeback
        .write_back(WritebackRequest {
            engine: "shop",
            revision,
            drifted,
        })
        .await
}
