//! `/admin/v1/events/stream`: delivery outcomes as Server-Sent Events, as they happen. Each client
//! reads from its own position in a bounded buffer; one that falls behind is sent a `lagged`
//! event with the number it missed (and can re-read `/deliveries`), and never slows delivery.

use super::Admin;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

pub(super) fn router() -> axum::Router<Admin> {
    axum::Router::new().route("/events/stream", axum::routing::get(stream))
}

async fn stream(State(admin): State<Admin>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = BroadcastStream::new(admin.journal.subscribe())
        .map(|item| {
            Ok(match item {
                Ok(record) => Event::default()
                    .event("delivery")
                    .id(record.seq.to_string())
                    .json_data(&record)
                    .expect("a delivery record serializes"),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
            })
        })
        .take_until(admin.shutdown.cancelled_owned());
    let hello =
        futures_util::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    Sse::new(hello.chain(feed)).keep_alive(KeepAlive::default())
}
