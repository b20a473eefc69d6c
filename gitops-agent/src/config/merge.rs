//! From [`RawFile`] to [`AppsConfig`]: each key of an `[[app]]` wins over
//! the same key in `[defaults]`, which wins over the command line's flag
//! ([`Defaults`](super::Defaults)); every value is checked, names are unique, dependencies
//! exist and have no cycle, target directories do not overlap.
//!
//! The release keys (`branch`, `tag`, `semver`, `commit`) go together: an
//! application that sets one ignores those of `[defaults]`; so do the
//! target keys (`target_dir`, `[app.target]`). Lists (`allow`, `deny`,
//! `depends_on`) replace, they do not add up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use gitops_core::SyncWindow;
use gitops_git::ReferencePolicy;

use super::file::{Located, RawApp, RawFile, Source};
use super::{AppLines, AppSpec, AppTarget, AppsConfig, ConfigError, Policy, Section, overlap};
use crate::args::{DriftArg, RenderKind, VerifyModeArg};

/// The longest application name.
const MAX_NAME: usize = 100;

/// One application's raw keys over `[defaults]`'s, with what errors need.
struct Layer<'a> {
    app: &'a RawApp,
    defaults: &'a RawApp,
    name: &'a str,
    source: &'a Source<'a>,
    base: &'a Path,
    /// The `[[app]]` header, for errors about a missing key.
    header: std::ops::Range<usize>,
}

/// A key's value, from the application or `[defaults]`.
struct Found<'a, T> {
    value: &'a Located<T>,
    from_defaults: bool,
}

impl<'a> Layer<'a> {
    /// The application's value of a key, else `[defaults]`'s.
    fn pick<T>(&self, key: impl Fn(&'a RawApp) -> &'a Option<Located<T>>) -> Option<Found<'a, T>> {
        match (key(self.app), key(self.defaults)) {
            (Some(value), _) => Some(Found {
                value,
                from_defaults: false,
            }),
            (None, Some(value)) => Some(Found {
                value,
                from_defaults: true,
            }),
            (None, None) => None,
        }
    }

    fn section(&self, from_defaults: bool) -> Section {
        if from_defaults {
            Section::Defaults
        } else {
            Section::App(self.name.to_owned())
        }
    }

    /// An error about `found`'s value of `key`.
    fn bad<T>(&self, found: &Found<'_, T>, key: &str, message: impl Into<String>) -> ConfigError {
        let section = self.section(found.from_defaults);
        self.source
            .error(found.value.span(), section, Some(key), message)
    }

    /// A string key checked by `check`.
    fn parsed<T>(
        &self,
        key: &str,
        field: impl Fn(&'a RawApp) -> &'a Option<Located<String>>,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(found) = self.pick(field) else {
            return Ok(None);
        };
        check(found.value.get_ref())
            .map(Some)
            .map_err(|message| self.bad(&found, key, message))
    }

    /// A path key, resolved against the config's directory.
    fn path(&self, field: impl Fn(&'a RawApp) -> &'a Option<Located<String>>) -> Option<PathBuf> {
        self.pick(field)
            .map(|found| overlap::normalize(&self.base.join(found.value.get_ref())))
    }

    /// A list of path keys, each resolved against the config's directory.
    fn paths(
        &self,
        field: impl Fn(&'a RawApp) -> &'a Option<Located<Vec<String>>>,
    ) -> Option<Vec<PathBuf>> {
        self.pick(field).map(|found| {
            found
                .value
                .get_ref()
                .iter()
                .map(|p| overlap::normalize(&self.base.join(p)))
                .collect()
        })
    }

    fn windows(
        &self,
        key: &str,
        allow: bool,
        field: impl Fn(&'a RawApp) -> &'a Option<Located<Vec<String>>>,
    ) -> Result<Option<Vec<SyncWindow>>, ConfigError> {
        let Some(found) = self.pick(field) else {
            return Ok(None);
        };
        let windows = found
            .value
            .get_ref()
            .iter()
            .map(|spec| crate::args::window(allow, spec).map_err(|e| format!("{spec:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| self.bad(&found, key, message))?;
        Ok(Some(windows))
    }
}

/// Checks every application of `raw` and applies `[defaults]` and `cli`.
pub fn merge(
    raw: &RawFile,
    source: &Source<'_>,
    base: &Path,
    cli: &Policy,
) -> Result<AppsConfig, ConfigError> {
    let empty = RawApp::default();
    let defaults = raw.defaults.as_ref().map_or(&empty, |d| d.get_ref());
    if let Some(name) = &defaults.name {
        return Err(source.error(
            name.span(),
            Section::Defaults,
            Some("name"),
            "a name belongs to an [[app]]",
        ));
    }
    let mut config = AppsConfig {
        origin: source.origin.to_owned(),
        apps: Vec::with_capacity(raw.app.len()),
        lines: BTreeMap::new(),
    };
    for (index, app) in raw.app.iter().enumerate() {
        let name = app_name(app, index, source)?;
        if let Some(first) = config.lines.get(&name) {
            let span = app.get_ref().name.as_ref().map_or(app.span(), |n| n.span());
            let message = format!("another app at line {} has this name", first.app);
            return Err(source.error(span, Section::App(name), Some("name"), message));
        }
        let layer = Layer {
            app: app.get_ref(),
            defaults,
            name: &name,
            source,
            base,
            header: app.span(),
        };
        let (spec, target_line) = app_spec(&layer, cli)?;
        let lines = AppLines {
            app: source.line(app.span().start),
            target: target_line,
        };
        config.lines.insert(name, lines);
        config.apps.push(spec);
    }
    check_dependencies(&config)?;
    check_overlaps(&config)?;
    Ok(config)
}

/// The name of the `index`th application, checked.
fn app_name(
    app: &Located<RawApp>,
    index: usize,
    source: &Source<'_>,
) -> Result<String, ConfigError> {
    let numbered = Section::App(format!("#{}", index + 1));
    let Some(name) = &app.get_ref().name else {
        return Err(source.error(app.span(), numbered, Some("name"), "required"));
    };
    let text = name.get_ref();
    let valid = !text.is_empty()
        && text.len() <= MAX_NAME
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        let message = format!("{text:?}: use 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - (not . or ..)");
        return Err(source.error(name.span(), numbered, Some("name"), message));
    }
    Ok(text.clone())
}

/// One application's spec and the line of its target.
fn app_spec(layer: &Layer<'_>, cli: &Policy) -> Result<(AppSpec, usize), ConfigError> {
    let app_section = || Section::App(layer.name.to_owned());
    let repo = layer.pick(|a| &a.repo).ok_or_else(|| {
        let header = layer.header.clone();
        layer
            .source
            .error(header, app_section(), Some("repo"), "required")
    })?;
    let (target, target_line) = target(layer)?;
    let spec = AppSpec {
        name: layer.name.to_owned(),
        repo: resolve_repo(repo.value.get_ref(), layer.base),
        release: release(layer)?,
        path: layer.parsed("path", |a| &a.path, check_path)?,
        target,
        depends_on: layer
            .pick(|a| &a.depends_on)
            .map(|f| f.value.get_ref().clone())
            .unwrap_or_default(),
        policy: policy(layer, cli)?,
    };
    check_verify_mode(layer, &spec)?;
    Ok((spec, target_line))
}

/// The policy keys of one application over `[defaults]` over `cli`.
fn policy(layer: &Layer<'_>, cli: &Policy) -> Result<Policy, ConfigError> {
    Ok(Policy {
        render: layer
            .parsed("render", |a| &a.render, choice::<RenderKind>)?
            .unwrap_or(cli.render),
        drift: layer
            .parsed("drift", |a| &a.drift, choice::<DriftArg>)?
            .or(cli.drift),
        prune: layer
            .pick(|a| &a.prune)
            .map_or(cli.prune, |f| *f.value.get_ref()),
        interval: layer
            .parsed("interval", |a| &a.interval, crate::args::duration)?
            .unwrap_or(cli.interval),
        drift_interval: layer
            .parsed(
                "drift_interval",
                |a| &a.drift_interval,
                crate::args::duration,
            )?
            .unwrap_or(cli.drift_interval),
        allow: layer
            .windows("allow", true, |a| &a.allow)?
            .unwrap_or_else(|| cli.allow.clone()),
        deny: layer
            .windows("deny", false, |a| &a.deny)?
            .unwrap_or_else(|| cli.deny.clone()),
        writeback_branch: layer
            .pick(|a| &a.writeback_branch)
            .map(|f| f.value.get_ref().clone())
            .or_else(|| cli.writeback_branch.clone()),
        writeback_key: layer
            .path(|a| &a.writeback_key)
            .or_else(|| cli.writeback_key.clone()),
        verify_signers: layer
            .path(|a| &a.verify_signers)
            .or_else(|| cli.verify_signers.clone()),
        verify_pgp_keys: layer
            .paths(|a| &a.verify_pgp_keys)
            .unwrap_or_else(|| cli.verify_pgp_keys.clone()),
        verify_mode: layer
            .parsed("verify_mode", |a| &a.verify_mode, choice::<VerifyModeArg>)?
            .or(cli.verify_mode),
    })
}

/// A `verify_mode` needs keys, and a tag mode a release selected by tag;
/// the error is at the `verify_mode` key (or, from the flags, the app).
fn check_verify_mode(layer: &Layer<'_>, spec: &AppSpec) -> Result<(), ConfigError> {
    let Some(mode) = spec.policy.verify_mode else {
        return Ok(());
    };
    let message = if !spec.policy.verifies() {
        "no keys to verify with: give verify_signers or verify_pgp_keys"
    } else if mode != VerifyModeArg::Head
        && !matches!(
            spec.release,
            ReferencePolicy::Tag(_) | ReferencePolicy::Semver(_)
        )
    {
        "a tag is only verified when the release is selected by tag or semver"
    } else {
        return Ok(());
    };
    match layer.pick(|a| &a.verify_mode) {
        Some(found) => Err(layer.bad(&found, "verify_mode", message)),
        None => Err(layer.source.error(
            layer.header.clone(),
            Section::App(layer.name.to_owned()),
            Some("verify_mode"),
            format!("--verify-mode: {message}"),
        )),
    }
}

/// A value of a clap enum (`files`, `revert`, ...).
fn choice<T: ValueEnum>(value: &str) -> Result<T, String> {
    T::from_str(value, false).map_err(|_| {
        let known: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!("{value:?}: use one of {}", known.join(", "))
    })
}

fn check_path(path: &str) -> Result<String, String> {
    gitops_core::model::validate_relative_path(path)
        .map(|()| path.to_owned())
        .map_err(|e| e.to_string())
}

/// A relative local path is taken relative to the config's directory;
/// URLs (`scheme://`) and scp-like `host:path` are kept as they are.
fn resolve_repo(repo: &str, base: &Path) -> String {
    let scp_like = repo
        .split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
    if repo.contains("://") || scp_like || Path::new(repo).is_absolute() {
        return repo.to_owned();
    }
    overlap::normalize(&base.join(repo)).display().to_string()
}

/// The release keys: at most one, from the application or else `[defaults]`.
fn release(layer: &Layer<'_>) -> Result<ReferencePolicy, ConfigError> {
    type Make = fn(String) -> ReferencePolicy;
    type Field = fn(&RawApp) -> &Option<Located<String>>;
    let keys: [(&str, Field, Make); 4] = [
        ("branch", |a| &a.branch, ReferencePolicy::Branch),
        ("tag", |a| &a.tag, ReferencePolicy::Tag),
        ("semver", |a| &a.semver, ReferencePolicy::Semver),
        ("commit", |a| &a.commit, ReferencePolicy::Commit),
    ];
    for (raw, from_defaults) in [(layer.app, false), (layer.defaults, true)] {
        let set: Vec<_> = keys
            .iter()
            .filter_map(|(key, field, make)| field(raw).as_ref().map(|v| (*key, v, make)))
            .collect();
        let section = layer.section(from_defaults);
        match set.as_slice() {
            [] => continue,
            [(key, value, make)] => {
                let policy = make(value.get_ref().clone());
                return policy.check().map(|()| policy).map_err(|message| {
                    layer
                        .source
                        .error(value.span(), section, Some(key), message)
                });
            }
            [(first, ..), (second, value, _), ..] => {
                let message = format!("give one of branch, tag, semver, commit (also {first})");
                return Err(layer
                    .source
                    .error(value.span(), section, Some(second), message));
            }
        }
    }
    Ok(ReferencePolicy::branch("main"))
}

/// The target keys: `target_dir` or an `[app.target]` table, from the
/// application or else `[defaults]`; and the line they are on.
fn target(layer: &Layer<'_>) -> Result<(AppTarget, usize), ConfigError> {
    for (raw, from_defaults) in [(layer.app, false), (layer.defaults, true)] {
        let section = layer.section(from_defaults);
        let error = |span, key: &str, message: String| {
            layer
                .source
                .error(span, section.clone(), Some(key), message)
        };
        match (&raw.target_dir, &raw.target) {
            (None, None) => continue,
            (Some(_), Some(table)) => {
                let message = "give target_dir or an [app.target] table, not both".to_owned();
                return Err(error(table.span(), "target", message));
            }
            (Some(dir), None) => {
                let path = overlap::normalize(&layer.base.join(dir.get_ref()));
                return Ok((AppTarget::Dir(path), layer.source.line(dir.span().start)));
            }
            (None, Some(table)) => {
                let line = layer.source.line(table.span().start);
                return target_table(table.get_ref(), layer.base)
                    .map(|target| (target, line))
                    .map_err(|(key, message)| error(table.span(), &key, message));
            }
        }
    }
    let message = "required: target_dir = \"DIR\" or an [app.target] table";
    Err(layer.source.error(
        layer.header.clone(),
        Section::App(layer.name.to_owned()),
        Some("target_dir"),
        message,
    ))
}

/// An `[app.target]` table: `kind = "dir"` with a `path`, or another kind
/// left to the agent's target factory. Errors are (key, message).
fn target_table(table: &toml::Table, base: &Path) -> Result<AppTarget, (String, String)> {
    let kind = match table.get("kind") {
        Some(toml::Value::String(kind)) => kind.clone(),
        Some(_) => return Err(("target.kind".into(), "must be a string".into())),
        None => return Err(("target.kind".into(), "required (\"dir\", ...)".into())),
    };
    let mut settings = table.clone();
    settings.remove("kind");
    if kind != "dir" {
        return Ok(AppTarget::Other { kind, settings });
    }
    if let Some(key) = settings.keys().find(|k| k.as_str() != "path") {
        let message = format!("unknown key {key:?} for kind \"dir\" (only path)");
        return Err((format!("target.{key}"), message));
    }
    match settings.get("path") {
        Some(toml::Value::String(path)) => Ok(AppTarget::Dir(overlap::normalize(&base.join(path)))),
        _ => Err(("target.path".into(), "required: a directory".into())),
    }
}

/// Every `depends_on` names another application, and there is no cycle.
fn check_dependencies(config: &AppsConfig) -> Result<(), ConfigError> {
    let names: BTreeSet<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
    for app in &config.apps {
        for dependency in &app.depends_on {
            if dependency == &app.name {
                return Err(config.error(
                    &app.name,
                    "depends_on",
                    "an app cannot depend on itself",
                ));
            }
            if !names.contains(dependency.as_str()) {
                let message = format!("no app is named {dependency:?}");
                return Err(config.error(&app.name, "depends_on", message));
            }
        }
    }
    match super::diff::cycle(&config.apps) {
        Some(cycle) => {
            let message = format!("a cycle: {}", cycle.join(" -> "));
            Err(config.error(&cycle[0], "depends_on", message))
        }
        None => Ok(()),
    }
}

/// No two directory targets overlap.
fn check_overlaps(config: &AppsConfig) -> Result<(), ConfigError> {
    let dirs: Vec<(&str, &Path)> = config
        .apps
        .iter()
        .filter_map(|a| match &a.target {
            AppTarget::Dir(dir) => Some((a.name.as_str(), dir.as_path())),
            AppTarget::Other { .. } => None,
        })
        .collect();
    match overlap::first_overlap(&dirs) {
        Some((first, second)) => {
            let (a, a_dir) = dirs[first];
            let (b, b_dir) = dirs[second];
            let line = config.lines.get(a).map_or(0, |l| l.target);
            let message = format!(
                "{} overlaps {} of app {a:?} (line {line}): two apps cannot manage one directory",
                b_dir.display(),
                a_dir.display(),
            );
            Err(config.error(b, "target_dir", message))
        }
        None => Ok(()),
    }
}
