//! Hot paths under the task path, so regressions show before they reach the suite: archiving
//! and framing a task, decoding and validating frames, and the owner's DAG.

use criterion::{Criterion, criterion_group, criterion_main};
use prism_graph::{Arg, ObjectId, Resources, TaskGraph, TaskId, TaskSpec};
use prism_transport::{Execute, FrameDecoder, ToWorker, encode_frame};

fn spec(seq: u64) -> TaskSpec {
    TaskSpec {
        task_id: TaskId::new(0, seq),
        function: "bench::small_value".into(),
        fn_hash: 0x1234,
        args: vec![
            Arg::Value(vec![0; 8]),
            Arg::Ref(ObjectId::new(TaskId::new(0, 1), 0)),
        ],
        num_returns: 1,
        resources: Resources::cpus(1.0).expect("valid"),
        max_retries: 3,
        retry_exceptions: false,
        inlined_refs: Vec::new(),
        inlined_actors: Vec::new(),
        stream: None,
        kind: prism_graph::TaskKind::Normal,
    }
}

fn frames(c: &mut Criterion) {
    let exec = ToWorker::Execute(vec![Execute {
        task: TaskId::new(0, 7),
        function: "bench::small_value".into(),
        fn_hash: 0x1234,
        args: vec![prism_transport::Value::Inline(vec![0; 8])],
        num_returns: 1,
        kind: prism_graph::TaskKind::Normal,
        stream: None,
        cpu: prism_graph::Amount::ZERO,
        run: 0,
        pull_from: Vec::new(),
    }]);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("encode Execute frame", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(&exec, &mut out).expect("encode");
        })
    });
    let mut wire = Vec::new();
    encode_frame(&exec, &mut wire).expect("encode");
    let mut decoder = FrameDecoder::new(1 << 20);
    c.bench_function("decode and validate Execute frame", |b| {
        b.iter(|| {
            decoder.extend(&wire);
            let frame = decoder.next_frame().expect("valid").expect("whole");
            frame.access::<ToWorker>().expect("validates");
        })
    });
    let task = spec(9);
    c.bench_function("archive TaskSpec", |b| {
        b.iter(|| rkyv::to_bytes::<rkyv::rancor::Error>(&task).expect("archive"))
    });
}

fn graph(c: &mut Criterion) {
    c.bench_function("graph insert + complete + free 1k tasks", |b| {
        b.iter(|| {
            let mut g = TaskGraph::new();
            for seq in 0..1000 {
                g.add_task(TaskId::new(0, seq), &[], 1).expect("add");
                g.start_task(TaskId::new(0, seq)).expect("start");
                g.complete_task(TaskId::new(0, seq)).expect("complete");
                g.remove_object(ObjectId::new(TaskId::new(0, seq), 0))
                    .expect("free");
            }
        })
    });
}

criterion_group!(benches, frames, graph);
criterion_main!(benches);
