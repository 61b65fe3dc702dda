//! Shared set-up for hedgerow's benchmarks: a leader node driven directly,
//! with members simulated by feeding it their heartbeats.

use std::time::Duration;

use hedgerow_core::wire::Heartbeat;
use hedgerow_core::{
    CasOutcome, ClockReading, Config, Identity, Input, LeaseOp, LeaseReply, Message, MonoTime,
    Node, NodeId, Now, Output, Payload, Term,
};

/// Unix ns of the benchmark's time zero.
const EPOCH: u64 = 1_767_225_600_000_000_000;

/// A leader with `members` members, and the clock to drive it.
pub struct LeaderBench {
    /// The leader.
    pub node: Node,
    /// Monotonic ns now.
    pub t: u64,
    ids: Vec<NodeId>,
    next: usize,
    /// Outputs drained so far.
    pub outputs: u64,
}

fn now(t: u64) -> Now {
    Now {
        mono: MonoTime::from_nanos(t),
        clock: ClockReading::synchronized(EPOCH + t, 1_000_000),
    }
}

impl LeaderBench {
    /// A node that won the lease and heard one heartbeat from each member.
    pub fn new(members: usize) -> Self {
        let me = Identity {
            id: NodeId::new("leader").unwrap_or_else(|_| unreachable!()),
            addr: "10.0.0.1:7946".into(),
            incarnation: 1,
        };
        let node = Node::new(Config::lan("bench"), me, 1).unwrap_or_else(|e| panic!("{e}"));
        let ids = (0..members)
            .map(|i| NodeId::new(format!("member-{i:05}")).unwrap_or_else(|_| unreachable!()))
            .collect();
        let mut b = LeaderBench {
            node,
            t: 0,
            ids,
            next: 0,
            outputs: 0,
        };
        b.elect();
        for _ in 0..members {
            b.heartbeat();
        }
        // Let the joins flush into the view.
        b.advance(Duration::from_millis(50));
        b
    }

    fn drain(&mut self) -> Option<LeaseOp> {
        let mut op = None;
        while let Some(out) = self.node.poll() {
            self.outputs += 1;
            if let Output::Lease(o) = out {
                op = Some(o);
            }
        }
        op
    }

    /// Drains outputs, answering store operations at once, until quiet.
    fn settle(&mut self) {
        while let Some(op) = self.drain() {
            self.answer(op);
        }
    }

    fn answer(&mut self, op: LeaseOp) {
        let reply = match &op {
            LeaseOp::Read { .. } => LeaseReply::Read(None),
            LeaseOp::CompareAndSet {
                expected_version,
                write,
                ..
            } => LeaseReply::Cas(CasOutcome::Applied(
                write.clone().into_row(expected_version.unwrap_or(0) + 1),
            )),
        };
        self.node.handle(
            now(self.t),
            Input::Lease {
                op: op.id(),
                result: Ok(reply),
            },
        );
    }

    fn elect(&mut self) {
        for _ in 0..10 {
            self.t += 25_000_000;
            self.node.handle(now(self.t), Input::Tick);
            self.settle();
            if self.node.is_leader(&now(self.t)) {
                return;
            }
        }
        panic!("the benchmark leader was not elected");
    }

    /// Moves time forward, firing timers and answering store operations.
    pub fn advance(&mut self, d: Duration) {
        let end = self.t + d.as_nanos() as u64;
        while let Some(at) = self.node.poll_timeout() {
            if at.as_nanos() > end {
                break;
            }
            self.t = self.t.max(at.as_nanos());
            self.node.handle(now(self.t), Input::Tick);
            self.settle();
        }
        self.t = end;
    }

    /// One member's heartbeat arrives and the leader's outputs are drained.
    pub fn heartbeat(&mut self) {
        let id = self.ids[self.next].clone();
        self.next = (self.next + 1) % self.ids.len();
        // Members' heartbeats are spread over the interval.
        self.t += 1_000_000_000 / self.ids.len() as u64;
        let hb = Heartbeat {
            term: Term(1),
            incarnation: 7,
            addr: "10.0.0.2:7946".into(),
            meta_version: 1,
            meta: Some(Payload::from(&b"zone=a"[..])),
            view_term: Term(1),
            view_version: 2,
        };
        self.node.handle(
            now(self.t),
            Input::Message {
                from: id,
                msg: Message::Heartbeat(hb),
            },
        );
        self.settle();
        let _ = self.node.poll_timeout();
    }
}
