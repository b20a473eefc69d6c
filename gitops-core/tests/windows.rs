//! Sync windows: the rules (allow, deny, deny wins, offsets, time zones and
//! daylight saving, manual
//! override, midnight) on a fixed calendar, and the engine obeying them on a
//! manual clock: blocked status with its end, drift repair held back, manual
//! syncs, and a sync in progress finishing or stopping at a wave boundary.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gitops_core::engine::{EngineConfig, SyncResult, Trigger};
use gitops_core::status::BlockReason;
use gitops_core::testing::{Call, MemorySource, MemoryTarget};
use gitops_core::window::{Clock, InProgress, ManualClock, SyncWindow, SyncWindows, format_utc};
use gitops_core::{ConditionKind, Engine, GateInput, ManifestRender, gate_fn};
use serde_json::json;

mod support;
use support::id;

/// Thursday 2026-11-26 00:00:00 UTC.
const THURSDAY: u64 = 1_795_651_200;
const HOUR: u64 = 3_600;
const MINUTE: u64 = 60;

fn at(seconds_after_thursday: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(THURSDAY + seconds_after_thursday)
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * HOUR)
}

fn until(windows: &SyncWindows, t: SystemTime, manual: bool) -> String {
    match windows.check(t, manual) {
        Ok(()) => "open".to_owned(),
        Err(block) => block.until.map_or_else(|| "never".to_owned(), format_utc),
    }
}

#[test]
fn allow_only_syncs_inside_an_allow_window() {
    let windows = SyncWindows::new()
        .with(SyncWindow::allow("mornings", "0 9 * * *", hours(2)).expect("window"));
    assert!(windows.check(at(9 * HOUR), false).is_ok());
    assert!(windows.check(at(11 * HOUR - 1), false).is_ok());
    let block = windows
        .check(at(11 * HOUR), false)
        .expect_err("closed at 11:00");
    assert_eq!(block.deny, None);
    assert_eq!(
        block.to_string(),
        "sync blocked: outside every allow window until 2026-11-27T09:00:00Z"
    );
    assert_eq!(until(&windows, at(8 * HOUR), false), "2026-11-26T09:00:00Z");
}

#[test]
fn a_deny_window_inside_an_allow_window_blocks_and_deny_wins() {
    let windows = SyncWindows::new()
        .with(SyncWindow::allow("office", "0 8 * * MON-FRI", hours(10)).expect("window"))
        .with(SyncWindow::deny("lunch", "0 12 * * *", hours(1)).expect("window"));
    assert!(windows.check(at(11 * HOUR + 59 * MINUTE), false).is_ok());
    let block = windows
        .check(at(12 * HOUR + 30 * MINUTE), false)
        .expect_err("lunch");
    assert_eq!(block.deny.as_deref(), Some("lunch"));
    assert_eq!(
        block.to_string(),
        "sync blocked by deny window lunch until 2026-11-26T13:00:00Z"
    );
    assert!(windows.check(at(13 * HOUR), false).is_ok());

    // Deny wins even over an allow window that is open all day, and when
    // both are open the deny one is named.
    let windows = SyncWindows::new()
        .with(SyncWindow::allow("always", "0 0 * * *", hours(24)).expect("window"))
        .with(SyncWindow::deny("freeze", "0 0 26 11 *", hours(48)).expect("window"));
    let block = windows.check(at(10 * HOUR), false).expect_err("frozen");
    assert_eq!(block.deny.as_deref(), Some("freeze"));
    assert_eq!(
        until(&windows, at(10 * HOUR), false),
        "2026-11-28T00:00:00Z"
    );

    // Friday evening: the office window closed, the next opens Monday.
    let windows = SyncWindows::new()
        .with(SyncWindow::allow("office", "0 8 * * MON-FRI", hours(10)).expect("window"));
    assert_eq!(
        until(&windows, at(24 * HOUR + 19 * HOUR), false),
        "2026-11-30T08:00:00Z"
    );
}

#[test]
fn schedules_are_read_at_their_offset() {
    // 09:00 at +05:30 is 03:30 UTC.
    let windows = SyncWindows::new().with(
        SyncWindow::allow("india-morning", "0 9 * * *", hours(1))
            .and_then(|w| w.utc_offset("+05:30"))
            .expect("window"),
    );
    assert!(windows.check(at(3 * HOUR + 29 * MINUTE), false).is_err());
    assert!(windows.check(at(3 * HOUR + 30 * MINUTE), false).is_ok());
    assert!(windows.check(at(4 * HOUR + 30 * MINUTE), false).is_err());
    assert_eq!(
        until(&windows, at(0), false),
        "2026-11-26T03:30:00Z",
        "opens at 09:00 local"
    );
    // A weekday at a negative offset: Friday 20:00 at -08:00 is Saturday 04:00 UTC.
    let windows = SyncWindows::new().with(
        SyncWindow::deny("friday-night", "0 20 * * FRI", hours(2))
            .and_then(|w| w.utc_offset("-08:00"))
            .expect("window"),
    );
    assert!(windows.check(at(2 * 24 * HOUR + 4 * HOUR), false).is_err());
    assert!(windows.check(at(24 * HOUR + 20 * HOUR), false).is_ok());
}

fn unix(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn schedules_follow_a_time_zones_daylight_saving() {
    // 08:00 Berlin is 07:00 UTC in winter (CET) and 06:00 UTC in summer (CEST).
    let office = SyncWindows::new().with(
        SyncWindow::allow("office", "0 8 * * MON-FRI", hours(10))
            .and_then(|w| w.time_zone("Europe/Berlin"))
            .expect("window"),
    );
    let jan_15_07_utc = 1_768_460_400; // a Thursday
    let jul_15_06_utc = 1_784_095_200; // a Wednesday
    assert!(office.check(unix(jan_15_07_utc - 1), false).is_err());
    assert!(office.check(unix(jan_15_07_utc), false).is_ok());
    assert!(office.check(unix(jul_15_06_utc - 1), false).is_err());
    assert!(office.check(unix(jul_15_06_utc), false).is_ok());
    assert_eq!(
        until(&office, unix(jul_15_06_utc - 5 * HOUR), false),
        "2026-07-15T06:00:00Z"
    );
    assert_eq!(
        until(&office, unix(jan_15_07_utc - 5 * HOUR), false),
        "2026-01-15T07:00:00Z"
    );
}

#[test]
fn a_start_in_a_spring_forward_gap_opens_after_the_gap() {
    // 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST (01:00 UTC).
    // 02:30 does not exist that night; the window opens at 03:30 CEST.
    let windows = SyncWindows::new().with(
        SyncWindow::allow("night", "30 2 * * *", hours(1))
            .and_then(|w| w.time_zone("Europe/Berlin"))
            .expect("window"),
    );
    let march_29 = 1_774_742_400; // 00:00 UTC
    assert_eq!(
        until(&windows, unix(march_29), false),
        "2026-03-29T01:30:00Z"
    );
    assert!(windows.check(unix(march_29 + 90 * MINUTE), false).is_ok());
    assert!(windows.check(unix(march_29 + 150 * MINUTE), false).is_err());
    // The night before, 02:30 CET was 01:30 UTC as well, the night after
    // 02:30 CEST is 00:30 UTC.
    assert!(
        windows
            .check(unix(march_29 - 22 * HOUR - 30 * MINUTE), false)
            .is_ok()
    );
    assert_eq!(
        until(&windows, unix(march_29 + 3 * HOUR), false),
        "2026-03-30T00:30:00Z"
    );
}

#[test]
fn a_start_that_happens_twice_when_clocks_go_back_opens_at_both() {
    // 2026-10-25: Berlin clocks go back from 03:00 CEST to 02:00 CET
    // (01:00 UTC), so 02:30 happens at 00:30 UTC and again at 01:30 UTC.
    let windows = SyncWindows::new().with(
        SyncWindow::deny("backup", "30 2 * * *", Duration::from_secs(30 * MINUTE))
            .and_then(|w| w.time_zone("Europe/Berlin"))
            .expect("window"),
    );
    let october_25 = 1_792_886_400; // 00:00 UTC
    assert!(windows.check(unix(october_25 + 29 * MINUTE), false).is_ok());
    let blocked = windows
        .check(unix(october_25 + 40 * MINUTE), false)
        .expect_err("the first 02:30 opens the deny window");
    assert_eq!(blocked.deny.as_deref(), Some("backup"));
    assert_eq!(
        blocked.until.map(format_utc).as_deref(),
        Some("2026-10-25T01:00:00Z")
    );
    assert!(windows.check(unix(october_25 + 70 * MINUTE), false).is_ok());
    assert!(
        windows
            .check(unix(october_25 + 100 * MINUTE), false)
            .is_err(),
        "the second 02:30 opens it again"
    );
    assert!(windows.check(unix(october_25 + 2 * HOUR), false).is_ok());

    // An hourly one-hour window is open all night, fold or not.
    let hourly = SyncWindows::new().with(
        SyncWindow::allow("hourly", "0 * * * *", hours(1))
            .and_then(|w| w.time_zone("Europe/Berlin"))
            .expect("window"),
    );
    for minute in (0..4 * 60).step_by(5) {
        assert!(
            hourly
                .check(unix(october_25 - HOUR + minute * MINUTE), false)
                .is_ok(),
            "closed at {}",
            format_utc(unix(october_25 - HOUR + minute * MINUTE))
        );
    }
}

#[test]
fn an_unknown_time_zone_names_the_window() {
    let err = SyncWindow::allow("office", "0 8 * * *", hours(1))
        .and_then(|w| w.time_zone("Europe/Atlantis"))
        .expect_err("no such zone");
    let text = err.to_string();
    assert!(
        text.starts_with("sync window office: time zone \"Europe/Atlantis\": "),
        "{text}"
    );
    let window = SyncWindow::allow("office", "0 8 * * *", hours(1))
        .and_then(|w| w.time_zone("America/New_York"))
        .expect("window");
    assert_eq!(
        window.to_string(),
        "allow window office (\"0 8 * * *\" for 3600s in America/New_York)"
    );
}

#[test]
fn windows_spanning_midnight() {
    let windows = SyncWindows::new()
        .with(SyncWindow::deny("nightly-backup", "0 22 * * *", hours(4)).expect("window"));
    assert!(windows.check(at(21 * HOUR + 59 * MINUTE), false).is_ok());
    assert!(windows.check(at(23 * HOUR), false).is_err());
    // 01:59 on Friday is inside the window Thursday 22:00 opened.
    assert!(
        windows
            .check(at(24 * HOUR + HOUR + 59 * MINUTE), false)
            .is_err()
    );
    assert!(windows.check(at(24 * HOUR + 2 * HOUR), false).is_ok());
    assert_eq!(
        until(&windows, at(23 * HOUR), false),
        "2026-11-27T02:00:00Z"
    );

    // A weekend freeze, Friday 22:00 for 60 h: Sunday noon waits for Monday 10:00.
    let windows = SyncWindows::new()
        .with(SyncWindow::deny("weekend", "0 22 * * FRI", hours(60)).expect("window"));
    assert_eq!(
        until(&windows, at(3 * 24 * HOUR + 12 * HOUR), false),
        "2026-11-30T10:00:00Z"
    );

    // Two deny windows back to back: "until" is the end of the second.
    let windows = SyncWindows::new()
        .with(SyncWindow::deny("a", "0 22 * * *", hours(2)).expect("window"))
        .with(SyncWindow::deny("b", "0 0 * * *", hours(3)).expect("window"));
    assert_eq!(
        until(&windows, at(23 * HOUR), false),
        "2026-11-27T03:00:00Z"
    );
}

#[test]
fn manual_syncs_pass_only_windows_that_allow_them() {
    let windows = SyncWindows::new()
        .with(
            SyncWindow::deny("release-freeze", "0 0 * * *", hours(24))
                .expect("window")
                .manual_sync(true),
        )
        .with(SyncWindow::deny("maintenance", "0 3 * * *", hours(1)).expect("window"));
    let noon = at(12 * HOUR);
    assert!(windows.check(noon, false).is_err(), "automatic: blocked");
    assert!(windows.check(noon, true).is_ok(), "manual: allowed");
    // A deny window without manual_sync binds manual syncs too.
    let block = windows
        .check(at(3 * HOUR + 30 * MINUTE), true)
        .expect_err("maintenance");
    assert_eq!(block.deny.as_deref(), Some("maintenance"));
    assert_eq!(
        until(&windows, at(3 * HOUR + 30 * MINUTE), true),
        "2026-11-26T04:00:00Z"
    );

    // Outside every allow window: manual passes only when an allow window says so.
    let strict = SyncWindows::new()
        .with(SyncWindow::allow("mornings", "0 9 * * *", hours(1)).expect("window"));
    assert!(strict.check(at(12 * HOUR), true).is_err());
    let lenient = SyncWindows::new().with(
        SyncWindow::allow("mornings", "0 9 * * *", hours(1))
            .expect("window")
            .manual_sync(true),
    );
    assert!(lenient.check(at(12 * HOUR), true).is_ok());
    assert!(lenient.check(at(12 * HOUR), false).is_err());
}

// ---- the engine on a manual clock ----

fn doc(name: &str, v: i64, depends: Option<&str>) -> String {
    let deps = depends.map_or(String::new(), |d| format!(", dependsOn: [{d}]"));
    format!("---\nkind: App\nmetadata: {{ name: {name}{deps} }}\nspec: {{ v: {v} }}\n")
}

/// A freeze from 10:00 to 12:00 UTC every day.
fn freeze(manual: bool) -> SyncWindow {
    SyncWindow::deny("freeze", "0 10 * * *", hours(2))
        .expect("window")
        .manual_sync(manual)
}

struct World {
    source: Arc<MemorySource>,
    target: Arc<MemoryTarget>,
    clock: Arc<ManualClock>,
    windows: SyncWindows,
    engine: Engine,
}

fn world(windows: SyncWindows, start: SystemTime) -> World {
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(
            EngineConfig::default()
                .windows(windows.clone())
                .interval(Duration::from_secs(30))
                .drift_interval(Duration::from_secs(60)),
        )
        .clock(clock.clone())
        .build()
        .expect("engine");
    World {
        source,
        target,
        clock,
        windows,
        engine,
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_waits_for_the_window_and_says_until_when() {
    let w = world(
        SyncWindows::new().with(freeze(false)),
        at(10 * HOUR + 30 * MINUTE),
    );
    w.source.commit([("app.yaml", doc("web", 1, None))]);
    let handle = w.engine.handle();
    let engine = w.engine.clone();
    let agent = tokio::spawn(async move { engine.run().await });

    tokio::time::sleep(Duration::from_secs(100)).await;
    assert!(
        w.target.contents().is_empty(),
        "nothing applied in the freeze"
    );
    let status = handle.status();
    let blocked = status.blocked.clone().expect("blocked");
    assert_eq!(blocked.reason, BlockReason::SyncWindowClosed);
    assert_eq!(
        blocked.message,
        "sync blocked by deny window freeze until 2026-11-26T12:00:00Z"
    );
    assert_eq!(blocked.until, Some(at(12 * HOUR)));
    let reconciling = status.condition(ConditionKind::Reconciling);
    assert_eq!(reconciling.reason, "SyncWindowClosed");
    assert!(
        status
            .to_string()
            .contains("[blocked: sync blocked by deny window freeze")
    );
    assert!(
        w.engine.history(10).await.expect("history").is_empty(),
        "a blocked attempt is not a sync"
    );

    // The window ends: the next poll deploys.
    w.clock.set(at(12 * HOUR));
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 1})));
    let status = handle.status();
    assert!(status.is(ConditionKind::Ready), "{status}");
    assert_eq!(status.blocked, None);

    // Drift repair obeys the windows too: tomorrow's freeze holds it back.
    w.clock.set(at(24 * HOUR + 10 * HOUR + 5 * MINUTE));
    w.target.edit(&id("App/web"), json!({"v": 666}));
    w.target.clear_calls();
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 666})));
    assert!(w.target.changes().is_empty(), "{:?}", w.target.changes());
    let blocked = handle.status().blocked.expect("blocked");
    assert_eq!(blocked.until, Some(at(24 * HOUR + 12 * HOUR)));
    w.clock.set(at(24 * HOUR + 12 * HOUR));
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(
        w.target.get(&id("App/web")),
        Some(json!({"v": 1})),
        "reverted"
    );
    assert_eq!(w.target.changes(), [Call::Apply(id("App/web"))]);

    handle.shutdown();
    agent.await.expect("join").expect("run");
}

/// A wall clock that moves with tokio's (paused) timer.
#[derive(Debug)]
struct TimerClock {
    wall: SystemTime,
    timer: tokio::time::Instant,
}

impl Clock for TimerClock {
    fn now(&self) -> SystemTime {
        self.wall + self.timer.elapsed()
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_wakes_when_the_window_opens_not_at_its_next_poll() {
    // Polls hourly and checks drift every 50 minutes; the freeze is 10:00-12:00.
    let source = Arc::new(MemorySource::new("main"));
    let target = Arc::new(MemoryTarget::new());
    let engine = Engine::builder()
        .source(source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(target.clone())
        .config(
            EngineConfig::default()
                .windows(SyncWindows::new().with(freeze(false)))
                .interval(hours(1))
                .drift_interval(Duration::from_secs(50 * MINUTE)),
        )
        .clock(Arc::new(TimerClock {
            wall: at(10 * HOUR + 30 * MINUTE),
            timer: tokio::time::Instant::now(),
        }))
        .build()
        .expect("engine");
    source.commit([("app.yaml", doc("web", 1, None))]);
    let handle = engine.handle();
    let agent = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });

    // 10:30: blocked. At 12:00 it deploys, not at the 12:30 poll.
    tokio::time::sleep(Duration::from_secs(89 * MINUTE)).await;
    assert!(
        target.contents().is_empty(),
        "nothing applied in the freeze"
    );
    tokio::time::sleep(Duration::from_secs(2 * MINUTE)).await;
    assert_eq!(target.get(&id("App/web")), Some(json!({"v": 1})));
    let history = engine.history(10).await.expect("history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].trigger, Trigger::Poll);

    // Next day: drift found in the freeze is repaired as the freeze ends,
    // not at the first drift check after it.
    tokio::time::sleep(Duration::from_secs(22 * HOUR + 15 * MINUTE)).await; // 10:16
    target.edit(&id("App/web"), json!({"v": 666}));
    target.clear_calls();
    tokio::time::sleep(Duration::from_secs(103 * MINUTE)).await; // 11:59
    assert_eq!(target.get(&id("App/web")), Some(json!({"v": 666})));
    assert_eq!(
        handle.status().blocked.map(|b| b.reason),
        Some(BlockReason::SyncWindowClosed),
        "the drift check in the freeze was held back"
    );
    tokio::time::sleep(Duration::from_secs(2 * MINUTE)).await; // 12:01
    assert_eq!(
        target.get(&id("App/web")),
        Some(json!({"v": 1})),
        "reverted"
    );
    assert_eq!(target.changes(), [Call::Apply(id("App/web"))]);
    let history = engine.history(10).await.expect("history");
    assert_eq!(history[0].trigger, Trigger::Drift, "{history:?}");

    handle.shutdown();
    agent.await.expect("join").expect("run");
}

#[tokio::test(start_paused = true)]
async fn manual_syncs_in_a_deny_window_follow_its_manual_sync_flag() {
    let w = world(SyncWindows::new().with(freeze(false)), at(11 * HOUR));
    w.source.commit([("app.yaml", doc("web", 1, None))]);
    let report = w
        .engine
        .sync_once()
        .await
        .expect("a blocked sync is an outcome");
    assert_eq!(report.result, SyncResult::Blocked, "{report}");
    let blocked = report.blocked.as_ref().expect("what blocks it");
    assert!(
        blocked
            .message
            .ends_with("sync blocked by deny window freeze until 2026-11-26T12:00:00Z"),
        "{report}"
    );
    assert!(w.target.contents().is_empty());

    let w = world(SyncWindows::new().with(freeze(true)), at(11 * HOUR));
    let rev = w.source.commit([("app.yaml", doc("web", 1, None))]);
    let report = w.engine.sync_once().await.expect("manual sync allowed");
    assert!(report.converged(), "{report}");
    // A rollback is manual too.
    w.source.commit([("app.yaml", doc("web", 2, None))]);
    w.engine.sync_once().await.expect("sync");
    let report = w.engine.rollback(&rev).await.expect("rollback allowed");
    assert!(report.converged(), "{report}");
    assert_eq!(w.target.get(&id("App/web")), Some(json!({"v": 1})));
}

/// Two waves (`b` depends on `a`); a pre-sync gate moves the clock into the
/// freeze, so the window opens while the sync runs.
async fn sync_into_a_freeze(policy: InProgress) -> World {
    let w = world(
        SyncWindows::new().with(freeze(false)).in_progress(policy),
        at(9 * HOUR + 59 * MINUTE),
    );
    let clock = w.clock.clone();
    let engine = Engine::builder()
        .source(w.source.clone())
        .render(Arc::new(ManifestRender::new()))
        .target(w.target.clone())
        .config(EngineConfig::default().windows(w.windows.clone()))
        .clock(w.clock.clone())
        .pre_sync_gate(gate_fn("slow-check", move |_: GateInput| {
            let clock = clock.clone();
            async move {
                clock.advance(Duration::from_secs(2 * MINUTE));
                Ok("took two minutes".to_owned())
            }
        }))
        .build()
        .expect("engine");
    w.source.commit([(
        "app.yaml",
        format!("{}{}", doc("a", 1, None), doc("b", 1, Some("App/a"))),
    )]);
    World { engine, ..w }
}

#[tokio::test(start_paused = true)]
async fn a_sync_in_progress_finishes_by_default() {
    let w = sync_into_a_freeze(InProgress::Finish).await;
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(
        w.target.changes(),
        [Call::Apply(id("App/a")), Call::Apply(id("App/b"))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_sync_in_progress_stops_at_the_next_wave_boundary_by_policy() {
    let w = sync_into_a_freeze(InProgress::StopAtWaveBoundary).await;
    let report = w.engine.sync_once().await.expect("sync");
    assert_eq!(report.result, SyncResult::WindowClosed, "{report}");
    assert!(
        report.to_string().contains("stopped by a sync window"),
        "{report}"
    );
    assert_eq!(
        w.target.changes(),
        [Call::Apply(id("App/a"))],
        "wave 1 finished, wave 2 never started"
    );
    let status = w.engine.status();
    assert!(!status.is(ConditionKind::Ready), "{status}");
    assert_eq!(
        status.condition(ConditionKind::Reconciling).reason,
        "SyncWindowClosed"
    );

    // After the window the rest is applied.
    w.clock.set(at(12 * HOUR));
    let report = w.engine.sync_once().await.expect("sync");
    assert!(report.converged(), "{report}");
    assert_eq!(
        w.target.changes(),
        [Call::Apply(id("App/a")), Call::Apply(id("App/b"))]
    );
}
