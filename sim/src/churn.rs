//! A steady churn for scale runs: at every step a few live members (never
//! the one that leads) crash or leave, alternately, and each comes back as
//! a new incarnation of the same id a fixed number of steps later.

use std::collections::VecDeque;

use hedgerow_core::Rng;

use crate::cluster::Cluster;

/// The churn's state between steps.
#[derive(Debug)]
pub struct Churn {
    rng: Rng,
    per_step: usize,
    back_after: u64,
    step: u64,
    gone: VecDeque<(u64, Vec<usize>)>,
    /// Members taken down so far (crashed or left).
    pub went: u64,
    /// Members restarted so far.
    pub came_back: u64,
}

impl Churn {
    /// `per_step` members go at each step and come back `back_after` steps
    /// later. With 100 ms steps, `per_step` = members / 1000 is a 1 %/s
    /// churn.
    pub fn new(seed: u64, per_step: usize, back_after: u64) -> Self {
        Churn {
            rng: Rng::new(seed),
            per_step,
            back_after,
            step: 0,
            gone: VecDeque::new(),
            went: 0,
            came_back: 0,
        }
    }

    /// One step: restarts those due, then takes `per_step` down. Run the
    /// cluster between steps.
    pub fn step(&mut self, c: &mut Cluster) {
        while self
            .gone
            .front()
            .is_some_and(|(at, _)| at + self.back_after <= self.step)
        {
            for s in self.gone.pop_front().map(|g| g.1).unwrap_or_default() {
                self.restart(c, s);
            }
        }
        let leader = c.leader();
        let mut live: Vec<usize> = c
            .live()
            .into_iter()
            .filter(|s| Some(*s) != leader)
            .collect();
        let mut down = Vec::new();
        for k in 0..self.per_step.min(live.len()) {
            let s = live.swap_remove(self.rng.below(live.len() as u64) as usize);
            if (self.step as usize + k).is_multiple_of(2) {
                c.crash(s);
            } else {
                c.leave(s);
            }
            self.went += 1;
            down.push(s);
        }
        self.gone.push_back((self.step, down));
        self.step += 1;
    }

    /// `steps` steps of 100 ms with a new member joining every
    /// `join_every` steps (from the first), checking that the leader the
    /// cluster had stays the only one (a churn that never touches the
    /// leader must not cost it the lease); then [`Churn::stop`].
    pub fn run_keeping_the_leader(&mut self, c: &mut Cluster, steps: u32, join_every: u32) {
        let leader = c.leader();
        for step in 0..steps {
            self.step(c);
            if step.is_multiple_of(join_every.max(1)) {
                c.add_node();
            }
            c.run_for(std::time::Duration::from_millis(100));
            assert_eq!(c.leader(), leader, "step {step}: the leader changed");
        }
        self.stop(c);
    }

    /// Brings back at once every member still down: the churn is over.
    pub fn stop(&mut self, c: &mut Cluster) {
        for s in std::mem::take(&mut self.gone).into_iter().flat_map(|g| g.1) {
            self.restart(c, s);
        }
    }

    fn restart(&mut self, c: &mut Cluster, slot: usize) {
        c.restart(slot);
        self.came_back += 1;
    }
}
