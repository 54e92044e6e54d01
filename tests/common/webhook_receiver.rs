//! A real HTTP receiver for the alert webhook: an axum server on a port of its own that
//! can be down (nothing listening), slow (answers only after the sender gave up), failing
//! (500), holding every request until told otherwise, or up (200), for all events or one.
//! It records every request it gets. Include with
//! `#[path = "common/webhook_receiver.rs"] mod webhook_receiver;`.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Up,
    /// 500 at once.
    Fail,
    /// Sleeps this long, then 500 (past the sender's timeout: it never sees the answer).
    Slow(Duration),
    /// Answers nothing until the mode changes, then answers as the new mode says.
    Hold,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Hit {
    pub event_id: String,
    pub body: Bytes,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    /// The mode it met on arrival.
    pub mode: Mode,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Shared>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    mode: watch::Sender<Mode>,
    per_event: Mutex<HashMap<String, Mode>>,
    hits: Mutex<Vec<Hit>>,
    /// Event ids answered 200, in order.
    answered_ok: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Receiver {
    /// A receiver that is down: its port has nothing listening until `listen`.
    pub fn down() -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Receiver {
            port,
            state: Arc::new(Shared {
                mode: watch::Sender::new(Mode::Up),
                per_event: Mutex::new(HashMap::new()),
                hits: Mutex::new(Vec::new()),
                answered_ok: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            }),
            server: Mutex::new(None),
        }
    }

    /// A receiver listening at once, in `mode`.
    pub async fn up(mode: Mode) -> Receiver {
        let r = Receiver::down();
        r.set_mode(mode);
        r.listen().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Starts serving on its port (it comes up).
    pub async fn listen(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the receiver's port is still free");
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.state.clone());
        *self.server.lock() = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// `mode` for this event only, whatever the receiver's mode.
    pub fn set_mode_for(&self, event_id: &str, mode: Mode) {
        self.state.per_event.lock().insert(event_id.into(), mode);
        self.state.mode.send_modify(|_| {}); // wakes held requests
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().clone()
    }

    pub fn hits_of(&self, event_id: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.event_id == event_id)
            .collect()
    }

    pub fn answered_ok(&self) -> Vec<String> {
        self.state.answered_ok.lock().clone()
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().take() {
            server.abort();
        }
    }
}

impl Shared {
    fn mode_for(&self, event_id: &str) -> Mode {
        let global = *self.mode.borrow();
        self.per_event
            .lock()
            .get(event_id)
            .copied()
            .unwrap_or(global)
    }
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let _counted = InFlight::enter(&s);
    let mut changes = s.mode.subscribe();
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["event_id"].as_str().map(String::from))
        .unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let mut mode = s.mode_for(&event_id);
    s.hits.lock().push(Hit {
        event_id: event_id.clone(),
        body,
        signature: header("x-tollgate-signature"),
        content_type: header("content-type"),
        mode,
    });
    while mode == Mode::Hold {
        if changes.changed().await.is_err() {
            break;
        }
        mode = s.mode_for(&event_id);
    }
    match mode {
        Mode::Up => {
            s.answered_ok.lock().push(event_id);
            StatusCode::OK
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Mode::Fail | Mode::Hold => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Counts a request in flight until its handler ends, or is dropped (sender gone).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(s: &Arc<Shared>) -> InFlight {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
