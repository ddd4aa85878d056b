//! The head's orders to jobs' drivers. Every joined driver keeps a stream open at the head on
//! which the head orders it and it answers each order by number
//! ([`ToControl::TakeOrders`]; a host of detached actors, [`ToControl::HostDetached`], which
//! is also ordered to make them). A kill of any job's actor is such an order (Ray's
//! `ray.kill` of a handle another job found by name, or `prism kill NAME`): the actor's own
//! driver kills it, so that it is not restarted and its name goes as after any kill, while
//! the head stays off the path of the actor's calls.
//!
//! [`ToControl::TakeOrders`]: prism_transport::ToControl::TakeOrders
//! [`ToControl::HostDetached`]: prism_transport::ToControl::HostDetached

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prism_graph::ActorId;
use prism_transport::quic;
use prism_transport::{FrameDecoder, FromControl, HeadOrder, OrderOutcome, OrderReply};
use tokio::sync::{Notify, oneshot};

use crate::proto::control::{KEEPALIVE, ORDER_ANSWER};

/// Largest frame a driver may send on its stream of orders.
const MAX_REPLY: usize = 1 << 20;

/// A job's driver's stream of orders.
pub(super) struct Link {
    /// The job.
    pub(super) job: String,
    send: tokio::sync::Mutex<quinn::SendStream>,
    /// Orders sent and not answered, by number.
    pending: parking_lot::Mutex<HashMap<u64, oneshot::Sender<OrderOutcome>>>,
    next: AtomicU64,
    /// The stream is open.
    alive: AtomicBool,
    closed: Notify,
}

impl Link {
    /// Job `job`'s stream of orders, whose sending half is `send`.
    pub(super) fn new(job: String, send: quinn::SendStream) -> Arc<Link> {
        Arc::new(Link {
            job,
            send: tokio::sync::Mutex::new(send),
            pending: parking_lot::Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            closed: Notify::new(),
        })
    }

    /// Whether its stream is still open.
    pub(super) fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Waits until its stream ends (at once if it has).
    pub(super) async fn closed(&self) {
        let closed = self.closed.notified();
        if self.alive() {
            closed.await;
        }
    }

    /// Sends `frame` on the stream (not an order: nothing answers it).
    pub(super) async fn tell(&self, frame: &FromControl) -> Result<(), quic::QuicError> {
        quic::send_frame(&mut *self.send.lock().await, frame).await
    }

    /// Reads the driver's answers on `recv` (from `peer`), keeping the stream alive while
    /// no order goes, until it ends: why it did. Every order still waiting fails then.
    pub(super) async fn serve(
        self: &Arc<Self>,
        mut recv: quinn::RecvStream,
        peer: SocketAddr,
    ) -> String {
        let keepalive = tokio::spawn(keep_alive(self.clone()));
        // The driver sends nothing before its first order: no frame of it was read with the
        // request.
        let mut decoder = FrameDecoder::new(MAX_REPLY);
        let why = loop {
            match quic::recv_frame(&mut recv, &mut decoder, peer).await {
                Ok(Some(frame)) => match quic::decode::<OrderReply>(&frame, peer) {
                    Ok(reply) => {
                        if let Some(waiter) = self.pending.lock().remove(&reply.order) {
                            let _ = waiter.send(reply.outcome);
                        }
                    }
                    Err(e) => break format!("it sent a malformed answer: {e}"),
                },
                Ok(None) => break "it ended its stream".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        keepalive.abort();
        self.close();
        why
    }

    /// Its stream ended: every order waiting fails.
    pub(super) fn close(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.pending.lock().clear();
        self.closed.notify_waiters();
    }

    /// Sends the order `make` numbers and waits for its answer.
    pub(super) async fn order(
        &self,
        make: impl FnOnce(u64) -> HeadOrder,
    ) -> Result<OrderOutcome, String> {
        let number = self.next.fetch_add(1, Ordering::SeqCst);
        let (tell, answer) = oneshot::channel();
        self.pending.lock().insert(number, tell);
        let gone = || format!("the driver of job {} is gone", self.job);
        if self.tell(&FromControl::Order(make(number))).await.is_err() {
            self.pending.lock().remove(&number);
            return Err(gone());
        }
        match tokio::time::timeout(ORDER_ANSWER, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                self.pending.lock().remove(&number);
                Err(format!(
                    "the driver of job {} did not answer within {} s",
                    self.job,
                    ORDER_ANSWER.as_secs()
                ))
            }
        }
    }
}

/// Tells the driver the head is there while no order comes (its stream counts a silent head
/// gone).
async fn keep_alive(link: Arc<Link>) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    loop {
        tick.tick().await;
        if link.tell(&FromControl::Ack).await.is_err() {
            return;
        }
    }
}

/// The open streams of orders, by job.
#[derive(Default)]
pub(super) struct JobOrders {
    links: parking_lot::Mutex<HashMap<String, Arc<Link>>>,
}

impl JobOrders {
    /// Takes job `job`'s driver's stream of orders ([`prism_transport::ToControl::TakeOrders`]
    /// on its connection from `peer`) until it ends.
    pub(super) async fn serve(
        &self,
        job: String,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: SocketAddr,
    ) {
        let link = Link::new(job, send);
        self.open(&link);
        tracing::debug!(job = link.job, %peer, "a driver takes the head's orders");
        let why = link.serve(recv, peer).await;
        tracing::debug!(job = link.job, "a driver takes no more orders: {why}");
        self.closed(&link);
    }

    /// `link` is its job's stream of orders from now on (a driver that connected again
    /// replaces its old one).
    pub(super) fn open(&self, link: &Arc<Link>) {
        if let Some(old) = self.links.lock().insert(link.job.clone(), link.clone()) {
            old.close();
        }
    }

    /// `link` ended.
    pub(super) fn closed(&self, link: &Arc<Link>) {
        let mut links = self.links.lock();
        if links.get(&link.job).is_some_and(|l| Arc::ptr_eq(l, link)) {
            links.remove(&link.job);
        }
    }

    /// Has job `job`'s driver kill its actor `actor`: the answer to a
    /// [`prism_transport::ToControl::KillActor`].
    pub(super) async fn kill(&self, job: &str, actor: ActorId) -> FromControl {
        let link = (self.links.lock().get(job))
            .filter(|link| link.alive())
            .cloned();
        let Some(link) = link else {
            return FromControl::Error(format!(
                "job {job} takes no orders at the head (it is not running: its actors ended with it)"
            ));
        };
        match link.order(|order| HeadOrder::Kill { order, actor }).await {
            Ok(OrderOutcome::Killed) => FromControl::Ack,
            Ok(OrderOutcome::Failed(why)) => {
                FromControl::Error(format!("job {job} did not kill actor {actor}: {why}"))
            }
            Ok(other) => FromControl::Error(format!("job {job} answered the kill with {other:?}")),
            Err(why) => FromControl::Error(why),
        }
    }
}
