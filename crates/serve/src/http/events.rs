//! `GET /api/v1/events`: server-sent events of what the workers publish. A client that
//! reconnects with `Last-Event-ID` first gets the recent events it missed (from the snapshot's
//! recent events), then the live ones, without duplicates. Streams end when the server shuts
//! down.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, watch};

use super::scrub;
use crate::state::{Event, Shared};

struct Stream_ {
    replay: VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    stopping: watch::Receiver<bool>,
    /// The id of the last event sent (live events up to it were replayed already).
    last: u64,
}

fn sse(event: &Event) -> SseEvent {
    let data =
        serde_json::to_string(&scrub::event(event.clone())).expect("events serialize to JSON");
    SseEvent::default().id(event.id.to_string()).data(data)
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        // No shutdown signal in this router: the stream ends with its client.
        std::future::pending::<()>().await;
    }
}

pub(super) fn stream(
    shared: &Shared,
    last_event_id: Option<u64>,
    stopping: watch::Receiver<bool>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before reading the recent events: nothing published in between is lost.
    let live = shared.subscribe();
    let (replay, last) = shared.read(|snapshot| {
        let last = snapshot.next_event_id;
        let replay = match last_event_id {
            Some(seen) => snapshot
                .recent_events
                .iter()
                .filter(|event| event.id > seen)
                .cloned()
                .collect(),
            None => VecDeque::new(),
        };
        (replay, last)
    });
    let state = Stream_ {
        replay,
        live,
        stopping,
        last,
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        if let Some(event) = state.replay.pop_front() {
            return Some((Ok(sse(&event)), state));
        }
        loop {
            tokio::select! {
                _ = stopped(&mut state.stopping) => return None,
                received = state.live.recv() => match received {
                    Ok(event) if event.id <= state.last => continue,
                    Ok(event) => {
                        state.last = event.id;
                        return Some((Ok(sse(&event)), state));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let comment = format!("{missed} events missed: reconnect with Last-Event-ID");
                        return Some((Ok(SseEvent::default().comment(comment)), state));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
