//! Which worker frames a node passes between its own workers (without IO): a worker that owns
//! tasks sends the worker it leased its tasks ([`ToWorker::Push`]) and that worker sends back
//! their ends ([`ToWorker::Returned`]), each wrapped in a [`ToNode::Forward`] naming the
//! other. The node relays the inner frame as it is when it is one whole frame of those kinds;
//! nothing else (a shutdown, say) passes from worker to worker. The driver's node and each
//! node daemon decide with the same rule. A forward naming another node's peer address (`at`:
//! a lease on a worker there) goes to that node's daemon, which checks the frame again
//! ([`check`]) before handing it to its worker; the ends coming back name no address, and go
//! to the node the owner's frames came from.
//!
//! [`ToNode::Forward`]: prism_transport::ToNode::Forward

use prism_transport::{ArchivedToNode, ArchivedToWorker, Frame, ToWorker};

/// What a frame a worker may send another is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Tasks pushed by their owner, to run under its lease on the receiving worker.
    Push,
    /// Ends, hand-backs and cancels.
    Other,
}

/// Where a frame from a worker goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// To the job's node (its driver): everything but a forward.
    Node,
    /// To the job's worker `to`, on this node or (`at`) on the node serving its peers there:
    /// this whole frame, of this kind.
    Worker {
        to: u64,
        at: Option<&'a str>,
        frame: &'a [u8],
        kind: Kind,
    },
    /// Nowhere: a forward of something a worker may not send another (why).
    Refused(String),
}

/// Where message `msg` from a worker goes.
pub(crate) fn route(msg: &ArchivedToNode) -> Route<'_> {
    let ArchivedToNode::Forward { to, at, frame } = msg else {
        return Route::Node;
    };
    match check(frame) {
        Ok(kind) => Route::Worker {
            to: to.to_native(),
            at: at.as_ref().map(|a| a.as_str()),
            frame: frame.as_slice(),
            kind,
        },
        Err(reason) => Route::Refused(reason),
    }
}

/// Whether `frame` is one whole [`ToWorker`] frame of a kind a worker may send another, and
/// which.
pub(crate) fn check(frame: &[u8]) -> Result<Kind, String> {
    // Read in place: a stream's decoder would zero a 64 KiB buffer for every frame relayed
    // (5% of the embedded node's thread in the n:n actor calls).
    let one = Frame::whole(frame, prism_transport::DEFAULT_MAX_FRAME)
        .map_err(|e| e.to_string())?
        .ok_or("not one whole frame")?;
    match one.access::<ToWorker>().map_err(|e| e.to_string())? {
        ArchivedToWorker::Push(_) => Ok(Kind::Push),
        ArchivedToWorker::Returned { .. }
        | ArchivedToWorker::Handback(_)
        | ArchivedToWorker::Cancel { .. }
        | ArchivedToWorker::Loans { .. }
        | ArchivedToWorker::Objects(_) => Ok(Kind::Other),
        _ => Err("not a push, an end, a hand-back, a cancel, a loan's word or a value".into()),
    }
}

#[cfg(test)]
mod tests {
    use prism_transport::{FrameDecoder, ToNode, encode_frame};

    use super::*;

    type Routed = Option<(u64, Option<String>, Vec<u8>)>;

    fn routed(msg: &ToNode) -> Result<Routed, String> {
        let mut bytes = Vec::new();
        encode_frame(msg, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&bytes);
        let frame = decoder.next_frame().unwrap().unwrap();
        match route(frame.access::<ToNode>().unwrap()) {
            Route::Node => Ok(None),
            Route::Worker { to, at, frame, .. } => {
                Ok(Some((to, at.map(str::to_string), frame.to_vec())))
            }
            Route::Refused(reason) => Err(reason),
        }
    }

    #[test]
    fn only_whole_pushes_ends_hand_backs_cancels_and_loans_pass_between_workers() {
        assert_eq!(routed(&ToNode::Release(Vec::new())), Ok(None));
        let mut push = Vec::new();
        encode_frame(&ToWorker::Push(Vec::new()), &mut push).unwrap();
        let forward = ToNode::Forward {
            to: 7,
            at: None,
            frame: push.clone(),
        };
        assert_eq!(routed(&forward), Ok(Some((7, None, push.clone()))));
        let there = Some("127.0.0.3:4000".to_string());
        let afar = ToNode::Forward {
            to: 7,
            at: there.clone(),
            frame: push.clone(),
        };
        assert_eq!(routed(&afar), Ok(Some((7, there, push.clone()))));
        // A borrower's word to its lender and the lender's values pass (loans).
        let loans = ToWorker::Loans {
            from: 3,
            ask: Vec::new(),
            release: Vec::new(),
            promote: Vec::new(),
        };
        for msg in [loans, ToWorker::Objects(Vec::new())] {
            let mut frame = Vec::new();
            encode_frame(&msg, &mut frame).unwrap();
            let forward = ToNode::Forward {
                to: 7,
                at: None,
                frame: frame.clone(),
            };
            assert_eq!(routed(&forward), Ok(Some((7, None, frame))));
        }
        let mut shutdown = Vec::new();
        encode_frame(&ToWorker::Shutdown, &mut shutdown).unwrap();
        // The node's word of a worker's death is the node's alone.
        let gone = ToWorker::WorkerGone {
            worker: 3,
            reason: String::new(),
        };
        let mut gone_frame = Vec::new();
        encode_frame(&gone, &mut gone_frame).unwrap();
        let mut two = push.clone();
        two.extend_from_slice(&push);
        for frame in [
            shutdown,
            gone_frame,
            two,
            push[..push.len() - 1].to_vec(),
            b"garbage!".to_vec(),
        ] {
            let refused = routed(&ToNode::Forward {
                to: 7,
                at: None,
                frame,
            });
            assert!(refused.is_err(), "{refused:?}");
        }
    }
}
