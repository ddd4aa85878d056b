//! The ring algorithms, over any pair of links: each member sends to its right neighbour and
//! receives from its left one, a chunk at a time, so a collective streams through the ring
//! without ever holding more than a link's window of chunks in flight.
//!
//! Members sit on the ring in an order of their choosing (`rank_at[p]` is the rank at position
//! `p`); the blocks of a buffer are assigned so that a rank ends a reduce-scatter holding its
//! own part of the buffer ([`part`]), whatever its position.

use std::ops::Range;

use super::{Element, Op};

/// The largest chunk a link carries in one message (bytes).
pub(crate) const CHUNK_BYTES: usize = 256 << 10;

/// Why a link stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The neighbour's process is gone (or its link went silent).
    Died {
        /// The neighbour's rank.
        rank: u32,
        /// What showed it.
        reason: String,
    },
    /// A member ended the collective because rank `rank` failed; passed around the ring.
    Aborted {
        /// The rank that failed.
        rank: u32,
        /// Why.
        reason: String,
    },
    /// Nothing came from the neighbour within the group's timeout.
    TimedOut {
        /// The neighbour's rank.
        rank: u32,
    },
    /// The neighbour broke the protocol (a chunk of the wrong length).
    Protocol {
        /// The neighbour's rank.
        rank: u32,
        /// What was wrong.
        reason: String,
    },
}

impl Fault {
    /// The rank to blame and why, as passed on to the right neighbour.
    pub(crate) fn blame(&self) -> (u32, String) {
        match self {
            Fault::Died { rank, reason }
            | Fault::Aborted { rank, reason }
            | Fault::Protocol { rank, reason } => (*rank, reason.clone()),
            Fault::TimedOut { rank } => (*rank, "timed out".to_string()),
        }
    }
}

/// One direction of a ring link.
pub(crate) trait Link {
    /// Sends one chunk (at most [`CHUNK_BYTES`]) to the right neighbour; blocks while the
    /// link's window is full.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Fault>;
    /// Receives the next chunk from the left neighbour, which must be `len` bytes long, and
    /// hands it to `f`.
    fn recv(&mut self, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), Fault>;
    /// Tells the neighbour that the collective ended because of rank `rank` (best effort).
    fn abort(&mut self, rank: u32, reason: &str);
    /// Fails a wait on the neighbour after `timeout` (none, the default: wait while it lives).
    fn set_timeout(&mut self, _timeout: Option<std::time::Duration>) {}
}

/// Rank `rank`'s part of a buffer of `len` elements split among `n`: as even as can be, the
/// first `len % n` parts one element longer.
pub(crate) fn part(len: usize, n: usize, rank: usize) -> Range<usize> {
    let (base, extra) = (len / n, len % n);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// How many elements of `T` a chunk holds.
fn chunk_elems<T>() -> usize {
    (CHUNK_BYTES / std::mem::size_of::<T>()).max(1)
}

/// The byte view of elements.
fn bytes_of<T: Element>(elems: &[T]) -> &[u8] {
    // SAFETY: `Element` is sealed and implemented only for plain numbers (no padding, no
    // invalid bit patterns), so their memory is `size_of_val` initialized bytes; the view
    // borrows `elems` and lives no longer.
    unsafe { std::slice::from_raw_parts(elems.as_ptr().cast::<u8>(), std::mem::size_of_val(elems)) }
}

/// Calls `f` with `bytes` viewed as elements: in place when aligned, else through `scratch`.
fn with_elems<T: Element>(bytes: &[u8], scratch: &mut Vec<T>, f: impl FnOnce(&[T])) {
    let size = std::mem::size_of::<T>();
    let count = bytes.len() / size;
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: the pointer is aligned for `T` (checked), the `count * size` bytes are
        // initialized and borrowed for the call, and every bit pattern is a valid `T`
        // (`Element` is sealed to plain numbers).
        let elems = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), count) };
        f(elems);
    } else {
        scratch.clear();
        scratch.extend(bytes.chunks_exact(size).map(|c| T::from_ne_slice(c)));
        f(scratch);
    }
}

/// A member's place on the ring and its two links.
pub(crate) struct Ring<'a> {
    /// This member's position.
    pub(crate) pos: usize,
    /// The rank at each position.
    pub(crate) rank_at: &'a [u32],
    /// To the right neighbour.
    pub(crate) out: &'a mut dyn Link,
    /// From the left neighbour.
    pub(crate) inc: &'a mut dyn Link,
}

impl Ring<'_> {
    fn n(&self) -> usize {
        self.rank_at.len()
    }

    /// Block `b`'s range of a buffer of `len` elements: the part of the rank that ends the
    /// reduce-scatter holding it (position `b - 1`).
    fn block(&self, len: usize, b: usize) -> Range<usize> {
        let n = self.n();
        part(len, n, self.rank_at[(b + n - 1) % n] as usize)
    }

    /// Runs steps around the ring, pipelined chunk by chunk: this member first sends block
    /// `first` from `buf`; at each step it receives a block (`recv[s]`), combines it into `buf`
    /// (reducing with `op`, or copying when `None`) and forwards what it now holds as the next
    /// step's send, while the chunk is still in cache. Every block is cut into the same number of
    /// chunks, so chunk `c` of every step travels in one order every member agrees on: for each
    /// chunk, steps 0, 1, ... Empty blocks still send an empty chunk per step, so that every step
    /// orders the members (a barrier relies on it). `Mean` divides the block a member ends with
    /// (the last reducing step's) by the group's size.
    fn pipeline<T: Element>(
        &mut self,
        buf: &mut [T],
        first: usize,
        recv: &[(usize, Option<Op>)],
    ) -> Result<(), Fault> {
        let (n, len) = (self.n(), buf.len());
        let blocks: Vec<Range<usize>> = (0..n).map(|b| self.block(len, b)).collect();
        let longest = blocks.iter().map(Range::len).max().unwrap_or(0);
        let chunks = longest.div_ceil(chunk_elems::<T>()).max(1);
        let sub = |b: usize, c: usize| {
            let whole = &blocks[b];
            let cut = part(whole.len(), chunks, c);
            whole.start + cut.start..whole.start + cut.end
        };
        let last_reduce = recv.iter().rposition(|(_, op)| op.is_some());
        let mut scratch = Vec::new();
        for c in 0..chunks {
            self.out.send(bytes_of(&buf[sub(first, c)]))?;
            for (s, &(block, op)) in recv.iter().enumerate() {
                let dst = &mut buf[sub(block, c)];
                let len = std::mem::size_of_val(dst);
                self.inc.recv(len, &mut |bytes| {
                    with_elems(bytes, &mut scratch, |incoming| match op {
                        Some(op) => T::combine(op, dst, incoming),
                        None => dst.copy_from_slice(incoming),
                    });
                })?;
                if op == Some(Op::Mean) && Some(s) == last_reduce {
                    T::divide(dst, n);
                }
                if s + 1 < recv.len() {
                    self.out.send(bytes_of(dst))?;
                }
            }
        }
        Ok(())
    }

    /// The steps of a ring reduce-scatter: at step s, block `pos - s - 1` comes in.
    fn reduce_steps(&self, op: Op) -> impl Iterator<Item = (usize, Option<Op>)> + use<> {
        let (n, p) = (self.n(), self.pos);
        (0..n - 1).map(move |s| ((p + 2 * n - s - 1) % n, Some(op)))
    }

    /// The steps of a ring allgather: at step s, block `pos - s` comes in.
    fn gather_steps(&self) -> impl Iterator<Item = (usize, Option<Op>)> + use<> {
        let (n, p) = (self.n(), self.pos);
        (0..n - 1).map(move |s| ((p + n - s) % n, None))
    }

    /// Ring reduce-scatter in place: afterwards this member's block `pos + 1` (its rank's
    /// part) holds the reduction of every member's; `Op::Mean` divides it.
    pub(crate) fn reduce_scatter<T: Element>(
        &mut self,
        buf: &mut [T],
        op: Op,
    ) -> Result<(), Fault> {
        if self.n() == 1 {
            return Ok(());
        }
        let steps: Vec<_> = self.reduce_steps(op).collect();
        self.pipeline(buf, self.pos, &steps)
    }

    /// Ring allgather in place: each member holds its rank's part (block `pos + 1`); afterwards
    /// every member holds every part.
    pub(crate) fn allgather<T: Element>(&mut self, buf: &mut [T]) -> Result<(), Fault> {
        if self.n() == 1 {
            return Ok(());
        }
        let steps: Vec<_> = self.gather_steps().collect();
        self.pipeline(buf, (self.pos + 1) % self.n(), &steps)
    }

    /// Allreduce in place: a reduce-scatter, then an allgather, as one pipeline (the block a
    /// member ends the reduce-scatter with is the first it sends in the allgather).
    pub(crate) fn allreduce<T: Element>(&mut self, buf: &mut [T], op: Op) -> Result<(), Fault> {
        if self.n() == 1 {
            return Ok(());
        }
        let steps: Vec<_> = self.reduce_steps(op).chain(self.gather_steps()).collect();
        self.pipeline(buf, self.pos, &steps)
    }

    /// Broadcast from the member at position `root`, pipelined around the ring.
    pub(crate) fn broadcast<T: Element>(
        &mut self,
        buf: &mut [T],
        root: usize,
    ) -> Result<(), Fault> {
        let (n, p) = (self.n(), self.pos);
        if n == 1 {
            return Ok(());
        }
        let per = chunk_elems::<T>();
        let chunks = buf.len().div_ceil(per).max(1);
        let forwards = (p + 1) % n != root;
        let mut scratch = Vec::new();
        for c in 0..chunks {
            let start = (c * per).min(buf.len());
            let end = (start + per).min(buf.len());
            let dst = &mut buf[start..end];
            if p != root {
                let len = std::mem::size_of_val(dst);
                self.inc.recv(len, &mut |bytes| {
                    with_elems(bytes, &mut scratch, |incoming| {
                        dst.copy_from_slice(incoming)
                    });
                })?;
            }
            if forwards {
                self.out.send(bytes_of(dst))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// An in-memory link: a bounded channel of chunks.
    struct Chan {
        tx: Option<mpsc::SyncSender<Vec<u8>>>,
        rx: Option<mpsc::Receiver<Vec<u8>>>,
        peer: u32,
    }

    impl Link for Chan {
        fn send(&mut self, bytes: &[u8]) -> Result<(), Fault> {
            let dead = || Fault::Died {
                rank: self.peer,
                reason: "gone".into(),
            };
            let tx = self.tx.as_ref().ok_or_else(dead)?;
            tx.send(bytes.to_vec()).map_err(|_| dead())
        }

        fn recv(&mut self, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), Fault> {
            let dead = || Fault::Died {
                rank: self.peer,
                reason: "gone".into(),
            };
            let chunk = self
                .rx
                .as_ref()
                .ok_or_else(dead)?
                .recv()
                .map_err(|_| dead())?;
            assert_eq!(chunk.len(), len, "the protocol agrees on lengths");
            f(&chunk);
            Ok(())
        }

        fn abort(&mut self, _rank: u32, _reason: &str) {
            self.tx = None;
        }
    }

    /// Runs `body` on `n` members (ring order reversed, so positions differ from ranks).
    fn run<R: Send + 'static>(
        n: usize,
        body: impl Fn(u32, &mut Ring<'_>) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let rank_at: Vec<u32> = (0..n as u32).rev().collect();
        let mut outs = Vec::new();
        let mut incs = Vec::new();
        for p in 0..n {
            let (tx, rx) = mpsc::sync_channel(2);
            outs.push(Chan {
                tx: Some(tx),
                rx: None,
                peer: rank_at[(p + 1) % n],
            });
            incs.push(Chan {
                tx: None,
                rx: Some(rx),
                peer: rank_at[p],
            });
        }
        // The receiver of position p's output is position p + 1.
        incs.rotate_right(1);
        let body = std::sync::Arc::new(body);
        let threads: Vec<_> = outs
            .into_iter()
            .zip(incs)
            .enumerate()
            .map(|(pos, (mut out, mut inc))| {
                let (body, rank_at) = (body.clone(), rank_at.clone());
                std::thread::spawn(move || {
                    let mut ring = Ring {
                        pos,
                        rank_at: &rank_at,
                        out: &mut out,
                        inc: &mut inc,
                    };
                    (rank_at[pos], body(rank_at[pos], &mut ring))
                })
            })
            .collect();
        let mut results: Vec<(u32, R)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        results.sort_by_key(|(rank, _)| *rank);
        results.into_iter().map(|(_, r)| r).collect()
    }

    fn input(rank: u32, len: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (i as f64) * 0.5 + f64::from(rank) * 1000.0)
            .collect()
    }

    #[test]
    fn allreduce_sums_means_and_maxes_over_uneven_chunked_buffers() {
        let len = CHUNK_BYTES / 8 * 3 + 7;
        for n in [1, 2, 3, 5] {
            for op in [Op::Sum, Op::Mean, Op::Max, Op::Min] {
                let got = run(n, move |rank, ring| {
                    let mut buf = input(rank, len);
                    ring.allreduce(&mut buf, op).unwrap();
                    buf
                });
                for i in [0, 1, len / 2, len - 1] {
                    let values: Vec<f64> = (0..n as u32).map(|r| input(r, len)[i]).collect();
                    let want = match op {
                        Op::Sum => values.iter().sum::<f64>(),
                        Op::Mean => values.iter().sum::<f64>() / n as f64,
                        Op::Max => values.iter().copied().fold(f64::MIN, f64::max),
                        Op::Min => values.iter().copied().fold(f64::MAX, f64::min),
                    };
                    for (rank, buf) in got.iter().enumerate() {
                        assert!(
                            (buf[i] - want).abs() < 1e-9,
                            "n {n} {op:?} rank {rank} [{i}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_one_element_allreduce_orders_every_member_and_tiny_buffers_work() {
        for len in [0, 1, 2] {
            let got = run(4, move |rank, ring| {
                let mut buf = vec![rank as f32 + 1.0; len];
                ring.allreduce(&mut buf, Op::Sum).unwrap();
                buf
            });
            assert!(
                got.iter().all(|b| b.iter().all(|&v| v == 10.0)),
                "{len}: {got:?}"
            );
        }
    }

    #[test]
    fn reduce_scatter_leaves_each_rank_its_own_part_and_allgather_joins_them() {
        let (n, len) = (3, 10);
        let got = run(n, move |rank, ring| {
            let mut buf = input(rank, len);
            ring.reduce_scatter(&mut buf, Op::Sum).unwrap();
            let own = part(len, n, rank as usize);
            let mine = buf[own.clone()].to_vec();
            ring.allgather(&mut buf).unwrap();
            (own, mine, buf)
        });
        let sum: Vec<f64> = (0..len)
            .map(|i| (0..n as u32).map(|r| input(r, len)[i]).sum())
            .collect();
        for (own, mine, all) in got {
            assert_eq!(mine, sum[own]);
            assert_eq!(all, sum);
        }
    }

    #[test]
    fn broadcast_copies_the_roots_buffer_to_every_member() {
        let len = CHUNK_BYTES / 4 * 2 + 3;
        for root_pos in 0..3 {
            let got = run(3, move |rank, ring| {
                let mut buf = vec![rank as f32; len];
                let root = ring.rank_at[root_pos];
                ring.broadcast(&mut buf, root_pos).unwrap();
                (root, buf)
            });
            for (root, buf) in got {
                assert!(buf.iter().all(|&v| v == root as f32));
            }
        }
    }

    #[test]
    fn a_dead_neighbour_fails_the_member_that_waits_on_it() {
        let got = run(3, |rank, ring| {
            if rank == 1 {
                ring.out.abort(1, "test");
                return Err(Fault::Died {
                    rank: 1,
                    reason: "it left".into(),
                });
            }
            let mut buf = vec![1.0f32; 100];
            ring.allreduce(&mut buf, Op::Sum)
        });
        assert!(got.iter().all(|r| r.is_err()), "{got:?}");
    }

    #[test]
    fn parts_cover_the_buffer_evenly() {
        let parts: Vec<_> = (0..3).map(|r| part(10, 3, r)).collect();
        assert_eq!(parts, vec![0..4, 4..7, 7..10]);
        assert_eq!(part(2, 4, 3), 2..2);
    }
}
