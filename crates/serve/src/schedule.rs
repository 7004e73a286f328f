//! The backup schedules of the config's `backups:` (cron: minute hour day-of-month month
//! day-of-week, UTC), run by the active instance only: at each minute the schedules match, the
//! widest kind that matches runs (full before diff before incr), then pgBackRest's expiry by the
//! retention (which [`BackupJobs::backup`] includes). Without `backups:` the default of the
//! platform guide: a full backup weekly (Sunday 01:00), a differential one every other day.
//!
//! A run missed while no instance was active is caught up once, when an instance becomes
//! active (as systemd's `Persistent=true` timers do): the minute of the last run is recorded in
//! `<state-dir>/serve/schedule.json`, and if a schedule fired between it and now, the widest
//! kind that did runs at once. The first start of all records the time and runs nothing.
//!
//! Each tenant's last backup (`last_backup_at` in the API and on the page) is read from the
//! backups when the instance becomes active and after every backup: see
//! [`BackupJobs::last_backups`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::metrics::ClusterKind;
use crate::state::{BackupStatus, EventKind, Shared};

/// Runs pgBackRest for the cluster (blocking: called on a blocking thread).
pub trait BackupJobs: Send + Sync {
    /// A backup of `kind` (`full`, `diff`, `incr`) and the expiry after it; what to report.
    fn backup(&self, kind: &str) -> Result<String, String>;

    /// The last backup of each database: what its owner calls "my last backup" — the newest
    /// pgBackRest backup set whose database list holds it (a cluster backup covers every
    /// database that existed when it started), or its newest logical dump if that is newer.
    /// `wanted` are the databases served; sets are read newest first until all of them are
    /// found (or none is left).
    fn last_backups(&self, wanted: &[String]) -> Result<BTreeMap<String, BackupStatus>, String> {
        let _ = wanted;
        Ok(BTreeMap::new())
    }
}

/// The schedules, cron text each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    pub full: Option<String>,
    pub diff: Option<String>,
    pub incr: Option<String>,
}

impl Default for Schedules {
    /// Full weekly on Sunday at 01:00, differential on the other days at 01:00.
    fn default() -> Self {
        Schedules {
            full: Some("0 1 * * 0".into()),
            diff: Some("0 1 * * 1-6".into()),
            incr: None,
        }
    }
}

impl Schedules {
    /// The widest kind due at some minute after `since` and up to `now` (at most 31 days
    /// back), with the last such minute: the run a stopped service missed.
    pub fn missed(
        &self,
        since: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Option<(&'static str, time::OffsetDateTime)> {
        let now = now.replace_second(0).ok()?.replace_nanosecond(0).ok()?;
        let since = since.max(now - time::Duration::days(31));
        let mut found: Option<(&'static str, time::OffsetDateTime)> = None;
        let mut at = now;
        while at > since {
            if let Some(kind) = self.due(at) {
                found = match found {
                    None => Some((kind, at)),
                    // Kinds are ordered full, diff, incr: the widest wins, the last minute stays.
                    Some((widest, last)) => Some((rank_min(widest, kind), last)),
                };
            }
            at -= time::Duration::minutes(1);
        }
        found
    }

    /// The kind due at this minute, if any.
    pub fn due(&self, at: time::OffsetDateTime) -> Option<&'static str> {
        [
            ("full", &self.full),
            ("diff", &self.diff),
            ("incr", &self.incr),
        ]
        .into_iter()
        .find(|(_, schedule)| schedule.as_deref().is_some_and(|s| matches(s, at)))
        .map(|(kind, _)| kind)
    }
}

fn rank_min(a: &'static str, b: &'static str) -> &'static str {
    let rank = |kind| ["full", "diff", "incr"].iter().position(|k| *k == kind);
    if rank(b) < rank(a) {
        b
    } else {
        a
    }
}

/// Whether the cron `schedule` (checked by the config already) fires at `at`'s minute.
pub fn matches(schedule: &str, at: time::OffsetDateTime) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return false;
    }
    let weekday = at.weekday().number_days_from_sunday() as u32;
    let values = [
        at.minute() as u32,
        at.hour() as u32,
        at.day() as u32,
        at.month() as u32,
    ];
    let field = |i: usize, min, max| field_matches(fields[i], values[i], min, max);
    let minute_hour_month = field(0, 0, 59) && field(1, 0, 23) && field(3, 1, 12);
    let day_of_month = field(2, 1, 31);
    // Day of week: 0 and 7 are both Sunday.
    let day_of_week = field_matches(fields[4], weekday, 0, 7)
        || (weekday == 0 && field_matches(fields[4], 7, 0, 7));
    // As cron does: with both day fields restricted, either one matching is enough.
    let days = match (fields[2] == "*", fields[4] == "*") {
        (false, false) => day_of_month || day_of_week,
        (true, _) => day_of_week,
        (false, true) => day_of_month,
    };
    minute_hour_month && days
}

fn field_matches(field: &str, value: u32, min: u32, max: u32) -> bool {
    field.split(',').any(|item| {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().unwrap_or(1).max(1)),
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return false,
            }
        } else {
            match range.parse::<u32>() {
                // `N/STEP` runs from N to the end.
                Ok(n) if item.contains('/') => (n, max),
                Ok(n) => (n, n),
                Err(_) => return false,
            }
        };
        value >= from && value <= to && (value - from).is_multiple_of(step)
    })
}

pub struct Scheduler {
    pub shared: Arc<Shared>,
    pub cluster: String,
    pub jobs: Arc<dyn BackupJobs>,
    pub schedules: watch::Receiver<Schedules>,
    /// `<state-dir>/serve/schedule.json`: cluster → the minute of its last scheduled run.
    pub record: PathBuf,
    pub active: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

impl Scheduler {
    pub async fn run(mut self) {
        // Whether this instance has been active yet (the catch-up and the first reading of
        // the backups happen then).
        let mut started = false;
        loop {
            if !started && *self.active.borrow() {
                started = true;
                self.refresh_last_backups().await;
                self.catch_up().await;
            }
            // Wake at the start of the next minute, or when this instance becomes active.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let to_next = Duration::from_secs(60 - now.as_secs() % 60);
            tokio::select! {
                _ = self.shutdown.changed() => return,
                changed = self.active.changed(), if !started => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tokio::time::sleep(to_next) => {}
            }
            if !*self.active.borrow() {
                continue;
            }
            let at = time::OffsetDateTime::now_utc();
            let Some(kind) = self.schedules.borrow().due(at) else {
                continue;
            };
            self.backup(kind, at).await;
        }
    }

    fn load(&self) -> BTreeMap<String, i64> {
        std::fs::read(&self.record)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records `at` as the minute of the cluster's last scheduled run.
    fn save(&self, at: time::OffsetDateTime) {
        let mut record = self.load();
        record.insert(self.cluster.clone(), at.unix_timestamp());
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.record.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temporary = self.record.with_extension("json.tmp");
            std::fs::write(&temporary, serde_json::to_vec_pretty(&record)?)?;
            std::fs::rename(&temporary, &self.record)
        };
        if let Err(error) = write() {
            tracing::warn!(%error, file = %self.record.display(), "recording the backup schedule");
        }
    }

    /// Runs, once, the backup a stopped service missed; the first start records the time.
    async fn catch_up(&self) {
        let now = time::OffsetDateTime::now_utc();
        let last = self
            .load()
            .get(&self.cluster)
            .and_then(|at| time::OffsetDateTime::from_unix_timestamp(*at).ok());
        let Some(last) = last else {
            self.save(now);
            return;
        };
        let missed = self.schedules.borrow().missed(last, now);
        if let Some((kind, at)) = missed {
            tracing::info!(cluster = %self.cluster, kind, missed = %at, "catching up a missed scheduled backup");
            self.backup(kind, now).await;
        }
    }

    /// Reads each served database's last backup into the snapshot.
    async fn refresh_last_backups(&self) {
        let cluster = self.cluster.clone();
        let wanted: Vec<String> = self.shared.read(|s| {
            s.tenants
                .values()
                .filter(|t| t.cluster == cluster)
                .map(|t| t.database.clone())
                .collect()
        });
        let jobs = self.jobs.clone();
        let found = tokio::task::spawn_blocking(move || jobs.last_backups(&wanted))
            .await
            .unwrap_or_else(|panicked| Err(format!("reading the backups panicked: {panicked}")));
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(cluster = %self.cluster, %error, "reading the last backups");
                return;
            }
        };
        self.shared.update(|s| {
            for tenant in s.tenants.values_mut().filter(|t| t.cluster == cluster) {
                if let Some(backup) = found.get(&tenant.database) {
                    tenant.last_backup_at = Some(backup.at.clone());
                }
            }
            let status = s.clusters.entry(cluster.clone()).or_default();
            status.name = cluster.clone();
            if status.last_backup.is_none() {
                status.last_backup = found
                    .values()
                    .filter(|b| b.kind != LOGICAL)
                    .max_by(|a, b| a.at.cmp(&b.at))
                    .cloned();
            }
            status.backups_by_database = found;
        });
    }

    /// Runs a backup of `kind` for the scheduled minute `at`.
    async fn backup(&self, kind: &'static str, at: time::OffsetDateTime) {
        self.save(at);
        tracing::info!(cluster = %self.cluster, kind, "scheduled backup");
        let jobs = self.jobs.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || jobs.backup(kind))
            .await
            .unwrap_or_else(|panicked| Err(format!("the backup panicked: {panicked}")));
        let cluster = self.cluster.clone();
        match result {
            Ok(report) => {
                let at = crate::now();
                self.shared.update(|s| {
                    let status = s.clusters.entry(cluster.clone()).or_default();
                    status.name = cluster.clone();
                    status.last_backup = Some(BackupStatus {
                        kind: kind.to_string(),
                        at,
                    });
                });
                self.shared.publish(
                    crate::event(
                        EventKind::Backup,
                        None,
                        None,
                        format!("{kind} backup: {report}"),
                    )
                    .with_cluster(&self.cluster)
                    .with_duration(started.elapsed()),
                );
                self.refresh_last_backups().await;
            }
            Err(error) => {
                tracing::warn!(cluster = %self.cluster, kind, %error, "scheduled backup failed");
                self.shared
                    .metrics
                    .backup_failures
                    .get_or_create(&ClusterKind {
                        cluster: cluster.clone(),
                        kind: kind.to_string(),
                    })
                    .inc();
                self.shared.publish(
                    crate::event(
                        EventKind::Backup,
                        None,
                        None,
                        format!("{kind} backup failed: {error}"),
                    )
                    .with_cluster(&self.cluster)
                    .with_duration(started.elapsed()),
                );
            }
        }
    }
}

/// The kind of [`BackupStatus`] of a logical dump (physical ones are `full`, `diff`, `incr`).
pub const LOGICAL: &str = "logical";

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_missed_run_is_the_widest_kind_since_the_last_one() {
        let schedules = Schedules::default();
        // Stopped on Saturday 12:00, started on Monday 09:00: Sunday's full and Monday's diff
        // were missed; one full backup catches up.
        let missed = schedules.missed(
            datetime!(2026-11-28 12:00 UTC),
            datetime!(2026-11-30 09:00:30 UTC),
        );
        assert_eq!(missed, Some(("full", datetime!(2026-11-30 01:00 UTC))));
        // Only Monday's diff.
        let missed = schedules.missed(
            datetime!(2026-11-29 12:00 UTC),
            datetime!(2026-11-30 09:00 UTC),
        );
        assert_eq!(missed, Some(("diff", datetime!(2026-11-30 01:00 UTC))));
        // The last run was at the scheduled minute itself: nothing missed.
        assert_eq!(
            schedules.missed(
                datetime!(2026-11-30 01:00 UTC),
                datetime!(2026-11-30 09:00 UTC)
            ),
            None
        );
    }

    #[test]
    fn the_default_is_full_on_sunday_and_diff_on_other_days() {
        let schedules = Schedules::default();
        // 2026-11-29 is a Sunday.
        assert_eq!(schedules.due(datetime!(2026-11-29 01:00 UTC)), Some("full"));
        assert_eq!(schedules.due(datetime!(2026-11-30 01:00 UTC)), Some("diff"));
        assert_eq!(schedules.due(datetime!(2026-11-30 01:01 UTC)), None);
        assert_eq!(schedules.due(datetime!(2026-11-30 02:00 UTC)), None);
    }

    #[test]
    fn cron_fields() {
        assert!(matches("*/15 * * * *", datetime!(2026-11-30 10:45 UTC)));
        assert!(!matches("*/15 * * * *", datetime!(2026-11-30 10:46 UTC)));
        assert!(matches("0 0,12 1 */2 *", datetime!(2026-11-01 12:00 UTC)));
        assert!(!matches("0 0,12 1 */2 *", datetime!(2026-12-01 12:00 UTC)));
        assert!(matches("30 3 * * 7", datetime!(2026-11-29 03:30 UTC)));
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert!(matches("0 2 1 * 1", datetime!(2026-11-30 02:00 UTC)));
        assert!(matches("0 2 1 * 1", datetime!(2026-12-01 02:00 UTC)));
        assert!(!matches("0 2 1 * 1", datetime!(2026-12-02 02:00 UTC)));
    }
}
