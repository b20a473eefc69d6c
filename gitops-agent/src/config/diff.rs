//! What a reload changes: from the running applications and a new config,
//! which to stop, start and restart, and in which order (pure).
//!
//! An application whose spec changed restarts, and so does every
//! application that depends on one that restarts (its dependency watches
//! the old engine). Stops go dependents first, starts dependencies first.

use std::collections::{BTreeMap, BTreeSet};

use super::{AppSpec, AppsConfig};

/// What a reload does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Changes {
    /// In the running set, not in the new config: stopped, resources kept.
    pub removed: Vec<String>,
    /// New in the config: started.
    pub added: Vec<String>,
    /// Changed (or depending on a changed one, or stopped by an error): restarted.
    pub restarted: Vec<String>,
    /// Every application to stop, dependents first (removed and restarted).
    pub stop: Vec<String>,
    /// Every application to start, dependencies first (added and restarted).
    pub start: Vec<String>,
}

impl Changes {
    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty()
    }
}

/// Compares the `running` applications (of which `dead` have stopped by
/// themselves and are restarted) with `next`.
///
/// ```
/// # use std::collections::BTreeSet;
/// # use std::path::Path;
/// use gitops_agent::config::{self, Defaults};
///
/// let old = "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/srv/a\"\n\
///            [[app]]\nname = \"b\"\nrepo = \"/r\"\ntarget_dir = \"/srv/b\"\ndepends_on = [\"a\"]\n";
/// let new = "[[app]]\nname = \"a\"\nrepo = \"/r\"\ntarget_dir = \"/srv/a\"\ninterval = \"5s\"\n\
///            [[app]]\nname = \"b\"\nrepo = \"/r\"\ntarget_dir = \"/srv/b\"\ndepends_on = [\"a\"]\n";
/// let parse = |text| config::parse(text, "apps.toml", Path::new("/"), &Defaults::default());
/// let (old, new) = (parse(old)?, parse(new)?);
/// let changes = config::diff(&old.apps, &BTreeSet::new(), &new);
/// assert_eq!(changes.restarted, ["a", "b"]); // b depends on a
/// assert_eq!(changes.stop, ["b", "a"]);
/// assert_eq!(changes.start, ["a", "b"]);
/// # Ok::<(), config::ConfigError>(())
/// ```
pub fn diff(running: &[AppSpec], dead: &BTreeSet<String>, next: &AppsConfig) -> Changes {
    let old: BTreeMap<&str, &AppSpec> = running.iter().map(|a| (a.name.as_str(), a)).collect();
    let new: BTreeMap<&str, &AppSpec> = next.apps.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut restart: BTreeSet<&str> = next
        .apps
        .iter()
        .filter(|a| {
            old.get(a.name.as_str())
                .is_some_and(|before| *before != *a || dead.contains(&a.name))
        })
        .map(|a| a.name.as_str())
        .collect();
    // Dependents of a restarted application restart too, transitively.
    loop {
        let more: Vec<&str> = next
            .apps
            .iter()
            .filter(|a| old.contains_key(a.name.as_str()) && !restart.contains(a.name.as_str()))
            .filter(|a| a.depends_on.iter().any(|d| restart.contains(d.as_str())))
            .map(|a| a.name.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        restart.extend(more);
    }
    let removed: BTreeSet<&str> = old
        .keys()
        .copied()
        .filter(|n| !new.contains_key(n))
        .collect();
    let added: BTreeSet<&str> = new
        .keys()
        .copied()
        .filter(|n| !old.contains_key(n))
        .collect();
    let mut stop = start_order(running);
    stop.reverse();
    stop.retain(|n| removed.contains(n.as_str()) || restart.contains(n.as_str()));
    let mut start = start_order(&next.apps);
    start.retain(|n| added.contains(n.as_str()) || restart.contains(n.as_str()));
    let in_file_order = |set: &BTreeSet<&str>, apps: &[AppSpec]| -> Vec<String> {
        apps.iter()
            .filter(|a| set.contains(a.name.as_str()))
            .map(|a| a.name.clone())
            .collect()
    };
    Changes {
        removed: in_file_order(&removed, running),
        added: in_file_order(&added, &next.apps),
        restarted: in_file_order(&restart, &next.apps),
        stop,
        start,
    }
}

/// The names of `apps` with every application after those it depends on
/// (dependencies outside `apps` are ignored), otherwise in the given order.
/// Applications on a cycle come last, in the given order.
pub fn start_order(apps: &[AppSpec]) -> Vec<String> {
    let names: BTreeSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::with_capacity(apps.len());
    while order.len() < apps.len() {
        let ready = apps.iter().find(|a| {
            !placed.contains(a.name.as_str())
                && a.depends_on
                    .iter()
                    .all(|d| !names.contains(d.as_str()) || placed.contains(d.as_str()))
        });
        match ready {
            Some(app) => {
                placed.insert(&app.name);
                order.push(app.name.clone());
            }
            None => {
                let rest = apps.iter().filter(|a| !placed.contains(a.name.as_str()));
                order.extend(rest.map(|a| a.name.clone()));
                break;
            }
        }
    }
    order
}

/// A dependency cycle among `apps`, if there is one: its names, the first
/// repeated at the end (`a -> b -> a`).
pub(crate) fn cycle(apps: &[AppSpec]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = apps
        .iter()
        .map(|a| (a.name.as_str(), a.depends_on.as_slice()))
        .collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for app in apps {
        let mut path: Vec<&str> = Vec::new();
        if let Some(cycle) = visit(&app.name, &deps, &mut path, &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// Depth-first search from `name`; `path` is the current chain.
fn visit<'a>(
    name: &'a str,
    deps: &BTreeMap<&'a str, &'a [String]>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| *n == name) {
        let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
        cycle.push(name.to_owned());
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    path.push(name);
    for dependency in deps.get(name).copied().unwrap_or_default() {
        if let Some(cycle) = visit(dependency, deps, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(name);
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Defaults, parse};

    fn config(apps: &[(&str, &str, &[&str])]) -> AppsConfig {
        let text: String = apps
            .iter()
            .map(|(name, interval, deps)| {
                let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
                format!(
                    "[[app]]\nname = {name:?}\nrepo = \"/r\"\ntarget_dir = \"/srv/{name}\"\n\
                     interval = {interval:?}\ndepends_on = [{}]\n",
                    deps.join(", ")
                )
            })
            .collect();
        parse(&text, "apps.toml", Path::new("/"), &Defaults::default()).expect("valid")
    }

    #[test]
    fn added_removed_changed_and_unchanged() {
        let old = config(&[("a", "1s", &[]), ("b", "1s", &[]), ("c", "1s", &[])]);
        let new = config(&[("a", "1s", &[]), ("c", "2s", &[]), ("d", "1s", &[])]);
        let changes = diff(&old.apps, &BTreeSet::new(), &new);
        assert_eq!(changes.removed, ["b"]);
        assert_eq!(changes.added, ["d"]);
        assert_eq!(changes.restarted, ["c"]);
        assert_eq!(changes.stop, ["c", "b"]);
        assert_eq!(changes.start, ["c", "d"]);
        assert!(diff(&new.apps, &BTreeSet::new(), &new).is_empty());
    }

    #[test]
    fn dependents_of_a_restarted_app_restart_and_dead_apps_restart() {
        let old = config(&[
            ("db", "1s", &[]),
            ("api", "1s", &["db"]),
            ("web", "1s", &["api"]),
        ]);
        let new = config(&[
            ("web", "1s", &["api"]),
            ("api", "1s", &["db"]),
            ("db", "2s", &[]),
        ]);
        let changes = diff(&old.apps, &BTreeSet::new(), &new);
        assert_eq!(changes.restarted, ["web", "api", "db"]);
        assert_eq!(changes.stop, ["web", "api", "db"]);
        assert_eq!(changes.start, ["db", "api", "web"]);
        let dead = BTreeSet::from(["web".to_owned()]);
        let changes = diff(&old.apps, &dead, &old);
        assert_eq!(changes.restarted, ["web"]);
        assert_eq!(changes.start, ["web"]);
    }

    #[test]
    fn start_order_puts_dependencies_first_and_cycles_are_found() {
        let apps = config(&[("c", "1s", &["b"]), ("b", "1s", &["a"]), ("a", "1s", &[])]).apps;
        assert_eq!(start_order(&apps), ["a", "b", "c"]);
        assert_eq!(cycle(&apps), None);
        let mut looped = apps.clone();
        looped[2].depends_on = vec!["c".into()];
        assert_eq!(
            cycle(&looped),
            Some(vec!["c".into(), "b".into(), "a".into(), "c".into()])
        );
        assert_eq!(start_order(&looped), ["c", "b", "a"]);
    }
}
