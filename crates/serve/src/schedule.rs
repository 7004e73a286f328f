//! The backup schedules of the config's `backups:` (cron: minute hour day-of-month month
//! day-of-week, UTC), run by the active instance only: at each minute the schedules match, the
//! widest kind that matches runs (full before diff before incr), then pgBackRest's expiry by the
//! retention (which [`BackupJobs::backup`] includes). Without `backups:` the default of the
//! platform guide: a full backup weekly (Sunday 01:00), a differential one every other day.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::metrics::ClusterKind;
use crate::state::{BackupStatus, EventKind, Shared};

/// Runs pgBackRest for the cluster (blocking: called on a blocking thread).
pub trait BackupJobs: Send + Sync {
    /// A backup of `kind` (`full`, `diff`, `incr`) and the expiry after it; what to report.
    fn backup(&self, kind: &str) -> Result<String, String>;
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
    pub active: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

impl Scheduler {
    pub async fn run(mut self) {
        loop {
            // Wake at the start of the next minute.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let to_next = Duration::from_secs(60 - now.as_secs() % 60);
            tokio::select! {
                _ = self.shutdown.changed() => return,
                _ = tokio::time::sleep(to_next) => {}
            }
            if !*self.active.borrow() {
                continue;
            }
            let at = time::OffsetDateTime::now_utc();
            let Some(kind) = self.schedules.borrow().due(at) else {
                continue;
            };
            self.backup(kind).await;
        }
    }

    async fn backup(&self, kind: &'static str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

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
