//! Credentials never leave the service: every text the API, the page, the event stream and the
//! metrics show passes through here. Two shapes carry a password in what the workers report:
//! URLs with user information (`postgres://app:secret@host/db`, `https://token@git.example`)
//! and key/value connection strings (`password=secret`).

use crate::state::{Event, Snapshot};

const HIDDEN: &str = "***";

/// `text` without the passwords and tokens it may carry.
pub fn text(text: &str) -> String {
    key_values(&urls(text))
}

/// `scheme://user:password@host` → `scheme://***@host` (the user too: a token may stand there).
fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or white space.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str(HIDDEN);
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `password=secret` (libpq key/value style, any case, quoted or not) → `password=***`.
fn key_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find("password") {
        let start = from + found + "password".len();
        let after = &text[start..];
        let trimmed = after.trim_start();
        from = start;
        let Some(value) = trimmed
            .strip_prefix('=')
            .or_else(|| trimmed.strip_prefix(':'))
        else {
            continue;
        };
        let value = value.trim_start();
        let value_start = text.len() - value.len();
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |end| end + 2)
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '"')
                .unwrap_or(value.len())
        };
        if value_len == 0 {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(HIDDEN);
        copied = value_start + value_len;
        from = copied;
    }
    out.push_str(&text[copied..]);
    out
}

fn option(value: &mut Option<String>) {
    if let Some(v) = value {
        *v = text(v);
    }
}

/// An event as it may be shown.
pub fn event(mut event: Event) -> Event {
    event.message = text(&event.message);
    event
}

/// The snapshot as it may be shown: every free text and location scrubbed.
pub fn snapshot(mut snapshot: Snapshot) -> Snapshot {
    snapshot.source.location = text(&snapshot.source.location);
    option(&mut snapshot.source.error);
    for line in &mut snapshot.source.diagnostics {
        *line = text(line);
    }
    for cluster in snapshot.clusters.values_mut() {
        option(&mut cluster.last_error);
        for line in &mut cluster.held_drops {
            *line = text(line);
        }
    }
    for tenant in snapshot.tenants.values_mut() {
        option(&mut tenant.last_error);
        for line in &mut tenant.drift {
            *line = text(line);
        }
    }
    for event in snapshot.recent_events.iter_mut() {
        event.message = text(&event.message);
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_user_information_is_hidden() {
        assert_eq!(
            text("connecting to postgres://app:s3cret@db.internal:5432/x failed"),
            "connecting to postgres://***@db.internal:5432/x failed"
        );
        assert_eq!(
            text("fetch https://ghp_token@github.com/o/r.git: 403"),
            "fetch https://***@github.com/o/r.git: 403"
        );
        assert_eq!(
            text("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
    }

    #[test]
    fn key_value_passwords_are_hidden() {
        assert_eq!(
            text("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            text("PASSWORD = 'a b c' sslmode=require"),
            "PASSWORD = *** sslmode=require"
        );
        assert_eq!(
            text("password authentication failed for user \"app\""),
            "password authentication failed for user \"app\""
        );
        assert_eq!(text("password=x password=y"), "password=*** password=***");
    }
}
