//! Shared set-up for hedgerow's benchmarks: a leader node driven directly,
//! with members simulated by feeding it their heartbeats.

use std::time::Duration;

use hedgerow_core::wire::Heartbeat;
use hedgerow_core::{
    ClockReading, Config, Event, Identity, Input, LeaseOp, Message, MonoTime, Node, NodeId, Now,
    Output, Payload, RequestHandle, Term,
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
    row: Option<hedgerow_core::LeaseRow>,
    /// Requests handed to the application and not answered yet.
    requests: Vec<RequestHandle>,
    /// One message of each kind the leader has sent, for decode samples,
    /// kept only when `keep_samples` is set (it costs instructions).
    pub sent: Vec<Message>,
    /// Whether to keep samples in `sent`.
    pub keep_samples: bool,
    /// Incarnation of the member that joins and leaves in [`Self::churn`].
    churn_incarnation: u64,
    request_id: u64,
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
            row: None,
            requests: Vec::new(),
            sent: Vec::new(),
            keep_samples: false,
            churn_incarnation: 0,
            request_id: 0,
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
            match out {
                Output::Lease(o) => op = Some(o),
                Output::Event(Event::Request { handle, .. }) => self.requests.push(handle),
                Output::Transmit { msg, .. } if self.keep_samples => self.keep(msg),
                _ => {}
            }
        }
        op
    }

    /// Keeps the first message of each kind the leader sends, as decode
    /// samples (real messages, not hand-made ones).
    fn keep(&mut self, msg: Message) {
        if !self.sent.iter().any(|m| m.kind() == msg.kind()) {
            self.sent.push(msg);
        }
    }

    /// Drains outputs, answering store operations at once, until quiet.
    fn settle(&mut self) {
        while let Some(op) = self.drain() {
            self.answer(op);
        }
    }

    fn answer(&mut self, op: LeaseOp) {
        // A fresh leader with no rival: every write applies.
        let reply = hedgerow_core::execute_on_row(&mut self.row, &op);
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
        // An up-to-date member's: its view is the leader's.
        let (view_term, view_version) = self.node.view().stamp();
        let hb = Heartbeat {
            view_term,
            view_version,
            ..heartbeat(7)
        };
        self.deliver(id, Message::Heartbeat(hb));
    }

    /// One member joins, the leader pushes the view delta to every member
    /// at the end of its batch window; then it leaves and the leader pushes
    /// that delta too. Two delta pushes per call.
    ///
    /// Time moves on by the members' own heartbeats (so nobody times out);
    /// returns how many were fed, for the caller to subtract their cost.
    pub fn churn(&mut self, window: Duration) -> u64 {
        let id = NodeId::new("churner").unwrap_or_else(|_| unreachable!());
        self.churn_incarnation += 1;
        let incarnation = self.churn_incarnation;
        // A new process's: it has no view yet.
        let hb = Heartbeat {
            view_term: Term(0),
            view_version: 0,
            ..heartbeat(incarnation)
        };
        self.deliver(id.clone(), Message::Heartbeat(hb));
        let mut fed = self.heartbeats_for(window);
        self.deliver(id, Message::Leave { incarnation });
        fed += self.heartbeats_for(window);
        fed
    }

    /// Feeds members' heartbeats until `d` has passed; returns how many.
    fn heartbeats_for(&mut self, d: Duration) -> u64 {
        let end = self.t + d.as_nanos() as u64;
        let mut fed = 0;
        while self.t < end {
            self.heartbeat();
            fed += 1;
        }
        fed
    }

    /// A member asks for a full view; the leader answers with snapshot
    /// chunks (kept as decode samples).
    pub fn snapshot_request(&mut self) {
        let id = self.ids[0].clone();
        self.deliver(id, Message::SnapshotRequest { term: Term(1) });
    }

    /// One send round at the leader: a member's request arrives, the
    /// application answers it, the reply goes out.
    pub fn send_round(&mut self, payload: &Payload) {
        let id = self.ids[self.next].clone();
        self.next = (self.next + 1) % self.ids.len();
        self.t += 1_000;
        self.request_id += 1;
        let msg = Message::Request {
            id: self.request_id,
            incarnation: 7,
            payload: payload.clone(),
            settled_below: self.request_id,
        };
        self.deliver(id, msg);
        for handle in std::mem::take(&mut self.requests) {
            self.node.reply(now(self.t), handle, Ok(payload.clone()));
        }
        self.settle();
    }

    /// Delivers `msg` from `from` and drains the leader's outputs.
    fn deliver(&mut self, from: NodeId, msg: Message) {
        self.node.handle(now(self.t), Input::Message { from, msg });
        self.settle();
        let _ = self.node.poll_timeout();
    }
}

/// A member's heartbeat, as members send them.
pub fn heartbeat(incarnation: u64) -> Heartbeat {
    Heartbeat {
        term: Term(1),
        incarnation,
        addr: "10.0.0.2:7946".into(),
        meta_version: 1,
        meta: Some(Payload::from(&b"zone=a"[..])),
        view_term: Term(1),
        view_version: 2,
        relays: true,
    }
}
