//! Admin HTTP: `/metrics`, `/healthz`, `/readyz`, `/debug/hosts`.

use std::sync::Arc;

use crate::published::Published;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::health::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub snapshot: Arc<Published>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/hosts", get(hosts))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let (ready, detail) = s.health.report();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, detail)
}

async fn hosts(State(s): State<AdminState>) -> impl IntoResponse {
    // A secondary's: what its zone holds.
    let reports = s.snapshot.reports_or_transferred();
    Json(serde_json::json!({
        "serial": reports.serial,
        "hosts": reports.hosts(),
    }))
}
