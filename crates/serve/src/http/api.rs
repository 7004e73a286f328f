//! The routes, their handlers and the OpenAPI document generated from them ([`ApiDoc`]).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::auth::{self, Refused};
use super::{events, page, scrub, App};
use crate::state::{
    BackupStatus, ClusterStatus, Command, Event, EventKind, LeaderState, Snapshot, SourceStatus,
    TenantState, TenantStatus,
};

/// Every error of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Missing(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            Refused::Wrong(m) | Refused::NotConfigured(m) => {
                ApiError::new(StatusCode::FORBIDDEN, m)
            }
            Refused::Unreadable(m) => {
                tracing::error!("{m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service cannot read its secret file (see its log)",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub leader: LeaderState,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
}

/// `GET /api/v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// The git commit SHA being served (directory source: none).
    pub revision: Option<String>,
    pub tenants: Vec<TenantStatus>,
}

/// `GET /api/v1/tenants/{ns}/{db}`: the tenant and its recent events.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    #[serde(flatten)]
    pub status: TenantStatus,
    /// Its recent events, oldest first.
    pub events: Vec<Event>,
}

/// `GET /api/v1/plan`: what the workers would do next, from the last verification of each
/// tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plan {
    pub revision: Option<String>,
    /// Pending operations over all tenants.
    pub pending: usize,
    /// The tenants with pending operations.
    pub tenants: Vec<PlanEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanEntry {
    pub tenant: String,
    pub cluster: String,
    pub state: TenantState,
    /// One line per pending operation.
    pub operations: Vec<String>,
}

/// `POST /api/v1/reconcile` and `POST /api/v1/hooks/git`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// What was enqueued: `reconcile`, `reconcile NS/DB` or `fetch`.
    pub accepted: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconcileQuery {
    /// One tenant, `NS/DB`; all of them without it.
    #[param(example = "shop/orders")]
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documents the path parameters
pub struct TenantPath {
    /// The tenant's namespace.
    #[param(example = "shop")]
    pub ns: String,
    /// The database name within the namespace.
    #[param(example = "orders")]
    pub db: String,
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document of the service, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pgtenant serve",
        description = "The state of the tenants served, and the few things one may ask of the service. Errors are `{\"error\": \"...\"}`."
    ),
    paths(
        status_page, healthz, readyz, metrics, tenants, tenant, plan, reconcile, events_stream,
        git_hook, openapi_json
    ),
    components(schemas(
        ErrorBody, Readiness, TenantList, TenantDetail, Plan, PlanEntry, Accepted, TenantStatus,
        TenantState, ClusterStatus, BackupStatus, SourceStatus, Event, EventKind, LeaderState,
        Snapshot
    )),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

pub(crate) fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/tenants/{ns}/{db}", get(tenant))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/api/v1/events", get(events_stream))
        .route("/api/v1/hooks/git", post(git_hook))
        .route("/api/v1/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(app)
}

fn shown(app: &App) -> Snapshot {
    scrub::snapshot(app.shared.snapshot())
}

/// The status page: clusters, tenants, recent events and errors; refreshes itself.
#[utoipa::path(get, path = "/", responses(
    (status = 200, description = "The status page", content_type = "text/html", body = String)
))]
async fn status_page(State(app): State<App>) -> Html<String> {
    Html(page::render(&shown(&app), &crate::http::page::now()))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "Alive", content_type = "text/plain", body = String)
))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Why `snapshot` is not ready to take traffic (empty: ready).
pub fn unready_reasons(snapshot: &Snapshot) -> Vec<String> {
    let mut reasons = Vec::new();
    match snapshot.leader {
        LeaderState::Active => {}
        LeaderState::Standby => reasons.push("standby: another instance is active".to_string()),
        LeaderState::Starting => reasons.push("starting: leader lock not decided yet".to_string()),
    }
    if let Some(error) = &snapshot.source.error {
        reasons.push(format!("source unreadable: {}", scrub::text(error)));
    }
    for (name, cluster) in &snapshot.clusters {
        match cluster.last_reconcile_ok {
            Some(true) => {}
            Some(false) => reasons.push(format!("cluster {name}: last reconcile failed")),
            None => reasons.push(format!("cluster {name}: not reconciled yet")),
        }
    }
    reasons
}

/// Readiness: active, source readable, every cluster's last reconcile succeeded.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready (standby, source unreadable, a failed reconcile)", body = Readiness)
))]
async fn readyz(State(app): State<App>) -> (StatusCode, Json<Readiness>) {
    let (leader, reasons) = app
        .shared
        .read(|snapshot| (snapshot.leader, unready_reasons(snapshot)));
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            leader,
            reasons,
        }),
    )
}

/// Prometheus metrics: OpenMetrics text when asked for (`Accept: application/openmetrics-text`,
/// as Prometheus does), else the Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "The metrics", content(
        (String = "application/openmetrics-text"),
        (String = "text/plain")
    ))
))]
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    app.shared.metrics.collect_pgbouncer().await;
    let text = app
        .shared
        .read(|snapshot| crate::metrics::encode(&app.shared.metrics, snapshot));
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::to_prometheus_text(&text),
        )
            .into_response()
    }
}

/// Every tenant served.
#[utoipa::path(get, path = "/api/v1/tenants", responses(
    (status = 200, description = "The tenants, by name", body = TenantList)
))]
async fn tenants(State(app): State<App>) -> Json<TenantList> {
    let snapshot = shown(&app);
    Json(TenantList {
        revision: snapshot.source.revision,
        tenants: snapshot.tenants.into_values().collect(),
    })
}

/// One tenant and its recent events.
#[utoipa::path(get, path = "/api/v1/tenants/{ns}/{db}", params(TenantPath), responses(
    (status = 200, description = "The tenant", body = TenantDetail),
    (status = 404, description = "No such tenant", body = ErrorBody)
))]
async fn tenant(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<TenantDetail>, ApiError> {
    let Path((ns, db)) = path.map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.body_text()))?;
    let name = format!("{ns}/{db}");
    let found = app.shared.read(|snapshot| {
        let status = snapshot.tenants.get(&name)?.clone();
        let events = snapshot
            .recent_events
            .iter()
            .filter(|event| event.tenant.as_deref() == Some(name.as_str()))
            .cloned()
            .collect::<Vec<_>>();
        Some((status, events))
    });
    let Some((mut status, events)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no tenant {name} is served"),
        ));
    };
    status.last_error = status.last_error.map(|e| scrub::text(&e));
    status.drift = status.drift.iter().map(|d| scrub::text(d)).collect();
    Ok(Json(TenantDetail {
        status,
        events: events.into_iter().map(scrub::event).collect(),
    }))
}

/// The pending operations of every tenant, from its last verification.
#[utoipa::path(get, path = "/api/v1/plan", responses(
    (status = 200, description = "The plan", body = Plan)
))]
async fn plan(State(app): State<App>) -> Json<Plan> {
    let snapshot = shown(&app);
    let tenants: Vec<PlanEntry> = snapshot
        .tenants
        .into_values()
        .filter(|tenant| !tenant.drift.is_empty())
        .map(|tenant| PlanEntry {
            tenant: tenant.tenant,
            cluster: tenant.cluster,
            state: tenant.state,
            operations: tenant.drift,
        })
        .collect();
    Json(Plan {
        revision: snapshot.source.revision,
        pending: tenants.iter().map(|t| t.operations.len()).sum(),
        tenants,
    })
}

fn enqueue(app: &App, command: Command) -> Result<(), ApiError> {
    if app.shared.enqueue(command) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
        ))
    }
}

/// Reconciles every tenant, or one (`?tenant=NS/DB`), as soon as a worker is free.
#[utoipa::path(post, path = "/api/v1/reconcile", params(ReconcileQuery),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Enqueued", body = Accepted),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No bearer token", body = ErrorBody),
        (status = 403, description = "Wrong token, or the service has no token file", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 503, description = "Shutting down, or the token file is unreadable", body = ErrorBody)
    )
)]
async fn reconcile(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<ReconcileQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    auth::bearer(&headers, app.token_file.as_deref())?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let accepted = match query.tenant {
        None => {
            enqueue(&app, Command::Reconcile { tenant: None })?;
            "reconcile".to_string()
        }
        Some(tenant) => {
            if !app.shared.read(|s| s.tenants.contains_key(&tenant)) {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no tenant {tenant} is served (expected NS/DB)"),
                ));
            }
            enqueue(
                &app,
                Command::Reconcile {
                    tenant: Some(tenant.clone()),
                },
            )?;
            format!("reconcile {tenant}")
        }
    };
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}

/// Server-sent events of reconcile results and the rest; `Last-Event-ID` replays the recent
/// events after it. Each event's data is an `Event` as JSON.
#[utoipa::path(get, path = "/api/v1/events",
    params(("Last-Event-ID" = Option<u64>, Header, description = "Replay the recent events after this id")),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String)
    )
)]
async fn events_stream(State(app): State<App>, headers: HeaderMap) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    events::stream(&app.shared, last, app.stopping.clone()).into_response()
}

/// A push to the git remote (GitHub: `X-Hub-Signature-256` of the raw body; GitLab:
/// `X-Gitlab-Token`): fetch now.
#[utoipa::path(post, path = "/api/v1/hooks/git",
    request_body(content = String, content_type = "application/json", description = "The webhook's payload (not read: only its signature is checked)"),
    params(
        ("X-Hub-Signature-256" = Option<String>, Header, description = "sha256=HEX, GitHub"),
        ("X-Gitlab-Token" = Option<String>, Header, description = "The secret, GitLab")
    ),
    responses(
        (status = 202, description = "A fetch is enqueued", body = Accepted),
        (status = 401, description = "Not signed", body = ErrorBody),
        (status = 403, description = "Wrong signature or token", body = ErrorBody),
        (status = 404, description = "The service has no webhook secret", body = ErrorBody),
        (status = 503, description = "Shutting down, or the secret file is unreadable", body = ErrorBody)
    )
)]
async fn git_hook(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    match auth::webhook(&headers, &body, app.webhook_secret_file.as_deref()) {
        Ok(()) => {}
        Err(Refused::NotConfigured(m)) => return Err(ApiError::new(StatusCode::NOT_FOUND, m)),
        Err(refused) => return Err(refused.into()),
    }
    enqueue(&app, Command::FetchNow)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: "fetch".to_string(),
        }),
    ))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses(
    (status = 200, description = "The OpenAPI document", body = Object)
))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
