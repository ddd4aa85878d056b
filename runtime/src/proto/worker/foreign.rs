//! Callers from other jobs (step 5 of docs/ownership.md): a process of another job that found
//! the actor this worker hosts by name at the head links to this worker's endpoint and pushes
//! its calls there, as this job's own callers do. Ids are per job (a worker's number, the
//! driver's owner 0, and so every task's and object's id), so such a caller's ids could be
//! this job's too: its link is given an owner number of its own here, an alias in
//! [`FOREIGN`]'s range that no process of this job has, and the ids on its frames are
//! rewritten at the link (the caller's number into the alias on the way in, back on the way
//! out). The books see one more owner.
//!
//! Only calls of the hosted actor cross (and cancels of them); their arguments are values (the
//! caller's objects are of its job: this worker could not map them), and so are their
//! results (a value too large to go inline goes inline all the same, and one holding
//! references or actor handles fails the call: see `worker::store_returns`).

use prism_graph::{ActorId, TaskId, TaskKind};
use prism_transport::{Frame, ToWorker, Value};

use super::direct::Refused;
use crate::proto::node::NODE_OWNER;

/// The owner numbers given to callers of other jobs: those with the top bit set (a worker's
/// number is its node's index in the job, under 2^31, shifted by 32), [`NODE_OWNER`] apart.
pub(crate) const FOREIGN: u64 = 1 << 63;

/// Whether owner number `owner` is a caller of another job's alias here.
pub(crate) fn is_foreign(owner: u64) -> bool {
    owner & FOREIGN != 0 && owner != NODE_OWNER
}

/// The `n`th alias a worker gives a caller of another job (`n` from 1).
pub(crate) fn alias(n: u64) -> u64 {
    FOREIGN | (n & (u64::MAX >> 2))
}

/// A frame from another job's caller `remote`, aliased `alias` here, for the books: its
/// calls of `hosted` (the actor this worker hosts) with their task ids in the alias's name,
/// re-encoded; anything else is refused (the link closes).
pub(crate) fn inbound(
    frame: &Frame,
    remote: u64,
    alias: u64,
    hosted: Option<ActorId>,
) -> Result<Vec<u8>, Refused> {
    let msg = frame
        .access::<ToWorker>()
        .map_err(|e| Refused::Frame(e.to_string()))?;
    let msg = rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(msg)
        .map_err(|e| Refused::Frame(e.to_string()))?;
    let ours = |task: TaskId| task.owner == remote;
    let msg = match msg {
        ToWorker::Push(mut calls) => {
            for call in &mut calls {
                let of_hosted = matches!(call.kind, TaskKind::ActorCall(a) if Some(a) == hosted);
                if !of_hosted {
                    return Err(Refused::Kind(
                        "a task of another job that is not a call of the actor hosted here",
                    ));
                }
                if call.stream.is_some() {
                    return Err(Refused::Kind("another job's call of a streaming method"));
                }
                if !ours(call.task) {
                    return Err(Refused::Kind("another job's push of a task not its own"));
                }
                if call.args.iter().any(|a| matches!(a, Value::Shared { .. })) {
                    return Err(Refused::Kind(
                        "another job's call naming an object in shared memory",
                    ));
                }
                call.task.owner = alias;
            }
            ToWorker::Push(calls)
        }
        ToWorker::Cancel { mut task } if ours(task) => {
            task.owner = alias;
            ToWorker::Cancel { task }
        }
        _ => return Err(Refused::Kind("another job's frame other than a call")),
    };
    let mut bytes = Vec::new();
    prism_transport::encode_frame(&msg, &mut bytes).map_err(|e| Refused::Frame(e.to_string()))?;
    Ok(bytes)
}

/// The books' frames `bytes` for the caller aliased `alias` (`remote` in its job): the same
/// frames with their task ids in the caller's own name.
pub(crate) fn outbound(bytes: &[u8], remote: u64, alias: u64) -> Result<Vec<u8>, String> {
    let mut decoder = prism_transport::FrameDecoder::new(usize::MAX);
    decoder.extend(bytes);
    let mut out = Vec::with_capacity(bytes.len());
    let unalias = |task: &mut TaskId| {
        if task.owner == alias {
            task.owner = remote;
        }
    };
    while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
        let msg = frame.access::<ToWorker>().map_err(|e| e.to_string())?;
        let mut msg =
            rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(msg).map_err(|e| e.to_string())?;
        match &mut msg {
            ToWorker::Returned { ends, .. } => ends.iter_mut().for_each(|e| unalias(&mut e.task)),
            ToWorker::Handback(tasks) => tasks.iter_mut().for_each(unalias),
            other => return Err(format!("a frame for another job's caller: {other:?}")),
        }
        prism_transport::encode_frame(&msg, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prism_graph::Amount;
    use prism_transport::{Execute, FrameDecoder, Outcome, TaskEnd};

    use super::*;

    const HOSTED: ActorId = ActorId(TaskId { owner: 0, seq: 7 });

    fn call(owner: u64, seq: u64, kind: TaskKind, args: Vec<Value>) -> Execute {
        Execute {
            task: TaskId::new(owner, seq),
            function: "Counter::inc".into(),
            fn_hash: 1,
            args,
            num_returns: 1,
            kind,
            stream: None,
            cpu: Amount::ZERO,
            run: 1,
            pull_from: Vec::new(),
        }
    }

    fn frame(msg: &ToWorker) -> Frame {
        let mut bytes = Vec::new();
        prism_transport::encode_frame(msg, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&bytes);
        decoder.next_frame().unwrap().unwrap()
    }

    fn decoded(bytes: &[u8]) -> ToWorker {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(bytes);
        let frame = decoder.next_frame().unwrap().unwrap();
        rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(frame.access::<ToWorker>().unwrap())
            .unwrap()
    }

    #[test]
    fn another_job_s_calls_of_the_hosted_actor_are_aliased_both_ways_and_nothing_else_passes() {
        let (remote, alias) = (5, alias(1));
        assert!(is_foreign(alias) && !is_foreign(5) && !is_foreign(NODE_OWNER));
        let inline = vec![Value::Inline(vec![1, 2, 3])];
        let push = ToWorker::Push(vec![call(remote, 9, TaskKind::ActorCall(HOSTED), inline)]);
        let ToWorker::Push(calls) =
            decoded(&inbound(&frame(&push), remote, alias, Some(HOSTED)).unwrap())
        else {
            panic!("a push");
        };
        assert_eq!(calls[0].task, TaskId::new(alias, 9));
        // A plain task, another actor's call, a shared argument, another owner's task: refused.
        let refused = |exec: Execute| {
            let push = ToWorker::Push(vec![exec]);
            inbound(&frame(&push), remote, alias, Some(HOSTED)).is_err()
        };
        assert!(refused(call(remote, 1, TaskKind::Normal, Vec::new())));
        let other = ActorId(TaskId::new(0, 8));
        assert!(refused(call(
            remote,
            1,
            TaskKind::ActorCall(other),
            Vec::new()
        )));
        let shared = vec![Value::Shared {
            id: prism_graph::ObjectId::new(TaskId::new(0, 1), 0),
            len: 1 << 20,
        }];
        assert!(refused(call(
            remote,
            1,
            TaskKind::ActorCall(HOSTED),
            shared
        )));
        assert!(refused(call(6, 1, TaskKind::ActorCall(HOSTED), Vec::new())));
        let hosted_none = ToWorker::Push(vec![call(
            remote,
            1,
            TaskKind::ActorCall(HOSTED),
            Vec::new(),
        )]);
        assert!(inbound(&frame(&hosted_none), remote, alias, None).is_err());
        // Ends go back in the caller's name.
        let end = TaskEnd {
            task: TaskId::new(alias, 9),
            outcome: Outcome::Returned {
                values: vec![Value::Inline(vec![4])],
                nested: vec![Vec::new()],
                actors: vec![Vec::new()],
            },
            times: None,
            run: 1,
        };
        let mut bytes = Vec::new();
        let returned = ToWorker::Returned {
            sent_us: 0,
            ends: vec![end],
            lent: Vec::new(),
        };
        prism_transport::encode_frame(&returned, &mut bytes).unwrap();
        prism_transport::encode_frame(
            &ToWorker::Handback(vec![TaskId::new(alias, 10)]),
            &mut bytes,
        )
        .unwrap();
        let out = outbound(&bytes, remote, alias).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&out);
        let mut seen = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let msg = frame.access::<ToWorker>().unwrap();
            seen.push(rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(msg).unwrap());
        }
        match &seen[..] {
            [ToWorker::Returned { ends, .. }, ToWorker::Handback(back)] => {
                assert_eq!(ends[0].task, TaskId::new(remote, 9));
                assert_eq!(back, &vec![TaskId::new(remote, 10)]);
            }
            other => panic!("two frames: {other:?}"),
        }
    }
}
