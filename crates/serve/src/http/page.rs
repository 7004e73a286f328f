//! The status page (`GET /`): one server-rendered HTML document, no external assets, no
//! JavaScript, refreshing itself. Every text from the snapshot is escaped (tenant names, file
//! names and errors come from the repo and from PostgreSQL: untrusted). On a phone-width
//! screen the tenants table turns into one block per tenant.

use std::fmt::Write;

use crate::state::{LeaderState, Snapshot, TenantState};

/// Seconds between refreshes of the page.
pub const REFRESH_SECONDS: u32 = 5;
/// How many of the recent events the page shows (newest first).
const EVENTS_SHOWN: usize = 50;

/// `text` safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The time now, RFC 3339 (UTC).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "—".to_string(), escape)
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #6e7781; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 0 1rem 2rem; max-width: 80rem; margin-inline: auto; }
header { border-bottom: 1px solid #8884; padding: .75rem 0; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.meta { color: var(--muted); margin: 0; overflow-wrap: anywhere; }
code { font-size: .9em; overflow-wrap: anywhere; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: .75rem; }
.card { border: 1px solid #8886; border-left: .35rem solid var(--muted); border-radius: .4rem; padding: .5rem .75rem; }
.card.ok { border-left-color: var(--ok); } .card.bad { border-left-color: var(--bad); }
.card h3 { margin: 0 0 .25rem; font-size: 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .75rem; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #8883; vertical-align: top; overflow-wrap: anywhere; }
th { font-weight: 600; }
.state { font-weight: 600; white-space: nowrap; }
.state-in-sync { color: var(--ok); }
.state-failed, .state-invalid { color: var(--bad); }
.state-drifted, .state-held, .state-pending { color: var(--warn); }
ul.drift { margin: .25rem 0 0; padding-left: 1.1rem; color: var(--muted); font-size: .9em; }
.error { color: var(--bad); overflow-wrap: anywhere; }
ol.events { list-style: none; padding: 0; margin: 0; }
ol.events li { padding: .3rem 0; border-bottom: 1px solid #8883; overflow-wrap: anywhere; }
.kind { font-weight: 600; }
.kind-failed, .kind-source-error { color: var(--bad); }
time, .when { color: var(--muted); font-size: .9em; }
@media (max-width: 40rem) {
  body { padding: 0 .6rem 1.5rem; }
  table, tbody, tr, td { display: block; width: 100%; }
  thead { display: none; }
  tr { border: 1px solid #8885; border-radius: .4rem; margin-bottom: .6rem; padding: .25rem .5rem; }
  td { border: 0; padding: .15rem 0; display: grid; grid-template-columns: 7.5rem 1fr; gap: .5rem; }
  td::before { content: attr(data-label); color: var(--muted); }
}
"#;

/// The whole page for `snapshot`, generated at `now`.
pub fn render(snapshot: &Snapshot, now: &str) -> String {
    let mut html = String::with_capacity(4096 + snapshot.tenants.len() * 400);
    let leader = match snapshot.leader {
        LeaderState::Active => "active",
        LeaderState::Standby => "standby",
        LeaderState::Starting => "starting",
    };
    let source = &snapshot.source;
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>pgtenant serve — {leader}</title><style>{STYLE}</style></head><body>\
         <header><h1>pgtenant serve</h1>\
         <p class=\"meta\" id=\"summary\">This instance is <strong id=\"leader\">{leader}</strong> \
         ({instance}) · source {kind} <code>{location}</code> · serving \
         <code id=\"revision\">{revision}</code> · last read {read}</p></header>",
        instance = escape(&snapshot.instance),
        kind = escape(&source.kind),
        location = escape(&source.location),
        revision = source
            .revision
            .as_deref()
            .map_or_else(|| "the working tree".to_string(), |r| escape(short(r))),
        read = or_dash(source.last_read_at.as_deref()),
    );

    // Errors first: what needs a person.
    let mut errors: Vec<String> = Vec::new();
    if let Some(error) = &source.error {
        errors.push(format!(
            "source: {} (the last good state is served)",
            escape(error)
        ));
    }
    errors.extend(
        source
            .diagnostics
            .iter()
            .map(|d| format!("values file: {}", escape(d))),
    );
    for (name, cluster) in &snapshot.clusters {
        if let Some(error) = &cluster.last_error {
            errors.push(format!("cluster {}: {}", escape(name), escape(error)));
        }
        errors.extend(
            cluster
                .held_drops
                .iter()
                .map(|held| format!("cluster {}: drop held: {}", escape(name), escape(held))),
        );
    }
    for tenant in snapshot.tenants.values() {
        if let Some(error) = &tenant.last_error {
            errors.push(format!(
                "tenant {}: {}",
                escape(&tenant.tenant),
                escape(error)
            ));
        }
    }
    if !errors.is_empty() {
        let _ = write!(
            html,
            "<section id=\"errors\"><h2>Errors ({})</h2><ul>",
            errors.len()
        );
        for error in &errors {
            let _ = write!(html, "<li class=\"error\">{error}</li>");
        }
        html.push_str("</ul></section>");
    }

    html.push_str("<section id=\"clusters\"><h2>Clusters</h2><div class=\"cards\">");
    if snapshot.clusters.is_empty() {
        html.push_str("<p class=\"meta\">No cluster known yet.</p>");
    }
    for (name, cluster) in &snapshot.clusters {
        let healthy = cluster.reachable && cluster.last_reconcile_ok != Some(false);
        let health = match (cluster.reachable, cluster.last_reconcile_ok) {
            (false, _) => "unreachable",
            (true, Some(false)) => "reconcile failing",
            (true, None) => "not reconciled yet",
            (true, Some(true)) => "healthy",
        };
        let backup = cluster.last_backup.as_ref().map_or_else(
            || "—".to_string(),
            |b| format!("{} at {}", escape(&b.kind), escape(&b.at)),
        );
        let drift_pass = match (&cluster.last_drift_pass_at, cluster.last_drift_pass_ms) {
            (Some(at), Some(ms)) => format!("{} ({ms} ms)", escape(at)),
            (Some(at), None) => escape(at),
            _ => "—".to_string(),
        };
        let _ = write!(
            html,
            "<article class=\"card {class}\" data-cluster=\"{name}\"><h3>{name}</h3><dl>\
             <dt>health</dt><dd class=\"health\">{health}</dd>\
             <dt>endpoint</dt><dd><code>{endpoint}</code></dd>\
             <dt>reconciled</dt><dd>{reconciled}</dd>\
             <dt>drift pass</dt><dd>{drift_pass}</dd>\
             <dt>backup</dt><dd>{backup}</dd>\
             <dt>held drops</dt><dd>{held}</dd></dl></article>",
            class = if healthy { "ok" } else { "bad" },
            name = escape(name),
            endpoint = escape(&cluster.endpoint),
            reconciled = or_dash(cluster.last_reconcile_at.as_deref()),
            held = cluster.held_drops.len(),
        );
    }
    html.push_str("</div></section>");

    let mut counts = [0usize; TenantState::ALL.len()];
    for tenant in snapshot.tenants.values() {
        counts[TenantState::ALL
            .iter()
            .position(|s| *s == tenant.state)
            .expect("every state is in ALL")] += 1;
    }
    let summary = TenantState::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{n} {}", state.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        html,
        "<section id=\"tenants\"><h2>Tenants ({}{}{})</h2>",
        snapshot.tenants.len(),
        if summary.is_empty() { "" } else { ": " },
        summary
    );
    if snapshot.tenants.is_empty() {
        html.push_str("<p class=\"meta\">No tenant declared.</p>");
    } else {
        html.push_str(
            "<table><thead><tr><th>Tenant</th><th>State</th><th>Cluster</th><th>Drift</th>\
             <th>Last applied</th><th>Last backup</th></tr></thead><tbody>",
        );
        for tenant in snapshot.tenants.values() {
            let state = tenant.state.as_str();
            let mut drift = tenant.drift.len().to_string();
            if !tenant.drift.is_empty() {
                drift.push_str("<ul class=\"drift\">");
                for line in &tenant.drift {
                    let _ = write!(drift, "<li>{}</li>", escape(line));
                }
                drift.push_str("</ul>");
            }
            let applied = match (&tenant.last_applied_at, &tenant.last_applied_revision) {
                (Some(at), Some(rev)) => {
                    format!("{} <code>{}</code>", escape(at), escape(short(rev)))
                }
                (Some(at), None) => escape(at),
                (None, _) => "—".to_string(),
            };
            let error = tenant.last_error.as_deref().map_or_else(String::new, |e| {
                format!("<div class=\"error\">{}</div>", escape(e))
            });
            let _ = write!(
                html,
                "<tr data-tenant=\"{name}\" data-state=\"{state}\">\
                 <td data-label=\"Tenant\"><span><strong>{name}</strong>{file}</span></td>\
                 <td data-label=\"State\"><span><span class=\"state state-{state}\">{state}</span>{error}</span></td>\
                 <td data-label=\"Cluster\">{cluster}</td>\
                 <td data-label=\"Drift\"><span>{drift}</span></td>\
                 <td data-label=\"Last applied\"><span class=\"when\">{applied}</span></td>\
                 <td data-label=\"Last backup\"><span class=\"when\">{backup}</span></td></tr>",
                name = escape(&tenant.tenant),
                file = tenant.file.as_deref().map_or_else(String::new, |f| format!(
                    "<br><code>{}</code>",
                    escape(f)
                )),
                cluster = escape(&tenant.cluster),
                backup = or_dash(tenant.last_backup_at.as_deref()),
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section>");

    html.push_str("<section id=\"events\"><h2>Recent events</h2>");
    if snapshot.recent_events.is_empty() {
        html.push_str("<p class=\"meta\">None yet.</p>");
    } else {
        html.push_str("<ol class=\"events\">");
        for event in snapshot.recent_events.iter().rev().take(EVENTS_SHOWN) {
            let kind = serde_json::to_value(event.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let subject = event
                .tenant
                .as_deref()
                .or(event.cluster.as_deref())
                .map_or_else(String::new, |s| format!(" <strong>{}</strong>", escape(s)));
            let duration = event
                .duration_ms
                .map_or_else(String::new, |ms| format!(" ({ms} ms)"));
            let revision = event.revision.as_deref().map_or_else(String::new, |r| {
                format!(" <code>{}</code>", escape(short(r)))
            });
            let _ = write!(
                html,
                "<li data-event=\"{id}\"><time>{at}</time> <span class=\"kind kind-{kind}\">{kind}</span>{subject}: {message}{revision}{duration}</li>",
                id = event.id,
                at = escape(&event.at),
                kind = escape(&kind),
                message = escape(&event.message),
            );
        }
        html.push_str("</ol>");
    }
    let _ = writeln!(
        html,
        "</section><footer><p class=\"meta\">Generated {} · refreshes every {REFRESH_SECONDS} s · \
         <a href=\"/api/v1/tenants\">API</a> · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/api/v1/openapi.json\">OpenAPI</a></p></footer></body></html>",
        escape(now)
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TenantStatus;

    #[test]
    fn untrusted_text_is_escaped() {
        let mut snapshot = Snapshot::default();
        snapshot.tenants.insert(
            "a/b".into(),
            TenantStatus {
                tenant: "a/<script>alert(1)</script>".into(),
                last_error: Some("\"><img src=x onerror=alert(1)>".into()),
                ..TenantStatus::default()
            },
        );
        let html = render(&snapshot, "now");
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img"));
        assert!(html.contains("a/&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    }
}
