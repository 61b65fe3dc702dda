//! A driver for `hedgerow-core` with no async runtime: three nodes on one
//! thread, a `HashMap` of inboxes as the network, one lease row in memory
//! as the store, and simulated time. It elects a leader, waits until every
//! node sees all three in its view, sends a request from a member to the
//! leader and prints the reply.
//!
//! Run it with `cargo run -p hedgerow-core --example custom_runtime`.
//! Everything it does is what a real driver does, with sockets and a clock
//! in place of the maps and the counter; see the crate docs, "The driver
//! contract".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::error::Error;
use std::time::Duration;

use hedgerow_core::{
    execute_on_row, ClockReading, Config, Event, Identity, Input, LeaseRow, Message, MonoTime,
    Node, NodeId, Now, Output,
};

/// Unix time (ns) at simulated instant 0.
const EPOCH_NS: u64 = 1_700_000_000_000_000_000;
/// The clock bound every reading carries: ±1 ms.
const BOUND_NS: u64 = 1_000_000;

/// What one node sends another: the network is one inbox per node.
type Inboxes = HashMap<NodeId, VecDeque<(NodeId, Message)>>;

/// A perfect clock in simulated time: the true time is `EPOCH_NS + mono`.
fn reading(mono: MonoTime) -> Now {
    Now {
        mono,
        clock: ClockReading::synchronized(EPOCH_NS + mono.as_nanos(), BOUND_NS),
    }
}

/// Drains `node` (the contract: after every call), carrying out what it
/// asks for: messages into the inboxes, store operations against the
/// row, events to this little application.
fn drain(
    me: &NodeId,
    node: &mut Node,
    now: Now,
    net: &mut Inboxes,
    row: &mut Option<LeaseRow>,
    replies: &mut Vec<String>,
) {
    while let Some(out) = node.poll() {
        match out {
            Output::Transmit { to, msg, .. } => {
                net.entry(to).or_default().push_back((me.clone(), msg));
            }
            // The store answers at once here; a real one answers later.
            Output::Lease(op) => {
                let result = Ok(execute_on_row(row, &op));
                node.handle(
                    now,
                    Input::Lease {
                        op: op.id(),
                        result,
                    },
                );
            }
            Output::Event(Event::Request { handle, payload }) => {
                let answer = format!("{me} handled {:?}", String::from_utf8_lossy(&payload));
                node.reply(now, handle, Ok(answer.as_str().into()));
            }
            Output::Event(Event::SendDone { result, .. }) => match result {
                Ok(reply) => replies.push(String::from_utf8_lossy(&reply.payload).into_owned()),
                Err(e) => replies.push(format!("send failed: {e}")),
            },
            Output::Event(Event::Elected { term }) => println!("{me} leads under term {term}"),
            _ => {}
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = Config::local("example");
    config.batch_window = Duration::from_millis(5);
    // A BTreeMap, so the nodes run in one fixed order and every run is the same.
    let mut nodes = BTreeMap::new();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let id = NodeId::new(name)?;
        let me = Identity {
            id: id.clone(),
            addr: format!("{name}:7000"),
            incarnation: 1,
        };
        nodes.insert(id, Node::new(config.clone(), me, i as u64 + 1)?);
    }
    let mut net = Inboxes::new();
    let mut row = None;
    let mut replies = Vec::new();
    let mut mono = MonoTime::from_nanos(0);
    let mut sent = false;

    // Ten simulated seconds at most.
    while mono < MonoTime::from_nanos(10_000_000_000) {
        let now = reading(mono);
        for (id, node) in nodes.iter_mut() {
            node.handle(now, Input::Tick);
            drain(id, node, now, &mut net, &mut row, &mut replies);
        }
        // Deliver until the network is quiet.
        // (Lowest id first, so that every run is the same.)
        while let Some(to) = net
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| k.clone())
            .min()
        {
            let Some((from, msg)) = net.get_mut(&to).and_then(VecDeque::pop_front) else {
                continue;
            };
            if let Some(node) = nodes.get_mut(&to) {
                node.handle(now, Input::Message { from, msg });
                drain(&to, node, now, &mut net, &mut row, &mut replies);
            }
        }
        let full = nodes.values().all(|n| n.view().members().count() == 3);
        if full && !sent {
            // A member (not the leader) sends to the leader.
            let sender = nodes.iter_mut().find(|(_, n)| !n.is_leader(&now));
            if let Some((id, node)) = sender {
                node.send(now, "hello");
                drain(id, node, now, &mut net, &mut row, &mut replies);
                sent = true;
            }
        }
        if let Some(reply) = replies.first() {
            println!("the leader replied: {reply}");
            return Ok(());
        }
        // Sleep until the earliest timer of any node (at least 1 ms on).
        let next = nodes.values().filter_map(Node::poll_timeout).min();
        mono = next.unwrap_or(mono).max(mono + Duration::from_millis(1));
    }
    Err("no reply within ten simulated seconds".into())
}
