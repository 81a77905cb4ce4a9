//! The dispatcher against a reference model that only watches what it answers.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::{
    Just, ProptestConfig, TestCaseError, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as Gen;

use super::*;

fn rules(strategy: Strategy, max_retry_count: u32) -> DispatchRules {
    DispatchRules {
        strategy,
        message_timeout_ms: 100,
        max_retry_count,
    }
}

#[test]
fn round_robin_spreads_and_respects_capacity() {
    let mut d = Dispatcher::new(rules(Strategy::RoundRobin, 3), None);
    d.connect(1, 2);
    d.connect(2, 2);
    for k in 0..6 {
        d.push(EventKey::Source(k), 0, k);
    }
    let out = d.dispatch(0);
    let to: Vec<_> = out.iter().map(|d| d.consumer).collect();
    assert_eq!(to, [1, 2, 1, 2]);
    assert_eq!(d.counts(), (4, 2, 0));
}

#[test]
fn dispatch_to_single_fills_the_first_consumer_first() {
    let mut d = Dispatcher::new(rules(Strategy::DispatchToSingle, 3), None);
    d.connect(1, 2);
    d.connect(2, 5);
    for k in 0..3 {
        d.push(EventKey::Source(k), 0, k);
    }
    let to: Vec<_> = d.dispatch(0).iter().map(|d| d.consumer).collect();
    assert_eq!(to, [1, 1, 2]);
}

#[test]
fn pinned_keeps_a_stream_on_one_consumer_and_waits_for_it() {
    let mut d = Dispatcher::new(rules(Strategy::Pinned, 3), None);
    d.connect(1, 1);
    d.connect(2, 1);
    d.push(EventKey::Source(0), 7, 0);
    d.push(EventKey::Source(1), 7, 1);
    let out = d.dispatch(0);
    assert_eq!(
        out.len(),
        1,
        "the second event of pin 7 waits for its consumer"
    );
    let owner = out[0].consumer;
    d.ack(EventKey::Source(0));
    let out = d.dispatch(0);
    assert_eq!(out[0].consumer, owner);
}

#[test]
fn checkpoint_stops_below_the_lowest_unfinished_event() {
    let mut d = Dispatcher::new(rules(Strategy::RoundRobin, 3), Some(9));
    d.connect(1, 10);
    for k in [10, 12, 15] {
        d.push(EventKey::Source(k), 0, k);
    }
    d.dispatch(0);
    d.ack(EventKey::Source(12));
    assert_eq!(d.checkpoint(), Some(9));
    d.ack(EventKey::Source(10));
    assert_eq!(d.checkpoint(), Some(12));
    d.nack(1, EventKey::Source(15), NackAction::Park);
    assert_eq!(
        d.checkpoint(),
        Some(12),
        "parking is not finished until written"
    );
    let parking = d.take_parking();
    assert_eq!(parking.len(), 1);
    d.parked(EventKey::Source(15));
    assert_eq!(d.checkpoint(), Some(15));
    assert_eq!(d.outstanding(), 0);
}

#[test]
fn a_timeout_retries_and_then_parks_after_max_retries() {
    let mut d = Dispatcher::new(rules(Strategy::RoundRobin, 1), None);
    d.connect(1, 1);
    d.push(EventKey::Source(0), 0, ());
    assert_eq!(d.dispatch(0)[0].retry_count, 0);
    d.expire(99);
    assert!(d.dispatch(99).is_empty(), "not late yet");
    d.expire(100);
    assert_eq!(d.dispatch(100)[0].retry_count, 1);
    d.expire(200);
    assert!(d.dispatch(200).is_empty());
    let parking = d.take_parking();
    assert_eq!(parking[0].1, ParkReason::MaxRetries);
}

#[test]
fn a_late_ack_after_a_timeout_still_finishes_the_event() {
    let mut d = Dispatcher::new(rules(Strategy::RoundRobin, 5), None);
    d.connect(1, 1);
    d.connect(2, 1);
    d.push(EventKey::Source(0), 0, ());
    d.dispatch(0);
    d.expire(100);
    let again = d.dispatch(100);
    assert_eq!(again.len(), 1);
    d.ack(EventKey::Source(0));
    assert_eq!(d.counts(), (0, 0, 0));
    assert_eq!(d.checkpoint(), Some(0));
}

#[test]
fn replays_do_not_move_the_checkpoint() {
    let mut d = Dispatcher::new(rules(Strategy::RoundRobin, 5), Some(50));
    d.connect(1, 4);
    d.push(EventKey::Replay(0), 0, ());
    d.push(EventKey::Source(51), 0, ());
    d.dispatch(0);
    assert!(d.replaying());
    d.ack(EventKey::Replay(0));
    assert!(!d.replaying());
    assert_eq!(d.checkpoint(), Some(50));
    d.ack(EventKey::Source(51));
    assert_eq!(d.checkpoint(), Some(51));
}

#[test]
fn a_paused_consumer_keeps_its_events_and_gets_no_more() {
    let mut d = Dispatcher::new(rules(Strategy::Pinned, 5), None);
    d.connect(1, 2);
    d.connect(2, 2);
    for k in 0..4 {
        d.push(EventKey::Source(k), k as u64, ());
    }
    let first = d.dispatch(0);
    let held_by_1 = first.iter().filter(|d| d.consumer == 1).count();
    assert!(held_by_1 > 0, "{first:?}");
    d.pause(1);
    assert_eq!(d.consumers()[0], (1, 0, held_by_1), "it keeps what it had");
    for del in first.iter().filter(|d| d.consumer == 2) {
        d.ack(del.key);
    }
    d.push(EventKey::Source(4), 0, ());
    d.push(EventKey::Source(5), 2, ());
    let later = d.dispatch(0);
    assert_eq!(later.len(), 2);
    assert!(
        later.iter().all(|d| d.consumer == 2),
        "a paused consumer is given nothing, and pins go to the others: {later:?}"
    );
    for del in later {
        d.ack(del.key);
    }
    // Its events come back after their timeout, to the consumer that is not paused.
    d.expire(100);
    let again = d.dispatch(100);
    assert_eq!(again.len(), held_by_1);
    assert!(again.iter().all(|d| d.consumer == 2 && d.retry_count == 1));
    assert_eq!(d.consumers()[0], (1, 0, 0));
}

#[derive(Debug, Clone)]
enum Op {
    Push,
    Connect(usize),
    Disconnect(usize),
    Pause(usize),
    Dispatch,
    Ack(usize),
    Nack(usize, u8),
    Advance(u64),
    FinishParking,
}

fn op() -> impl Gen<Value = Op> {
    prop_oneof![
        3 => Just(Op::Push),
        1 => (1usize..4).prop_map(Op::Connect),
        1 => (0usize..8).prop_map(Op::Disconnect),
        1 => (0usize..8).prop_map(Op::Pause),
        3 => Just(Op::Dispatch),
        3 => (0usize..16).prop_map(Op::Ack),
        2 => ((0usize..16), (0u8..4)).prop_map(|(i, a)| Op::Nack(i, a)),
        1 => (0u64..150).prop_map(Op::Advance),
        1 => Just(Op::FinishParking),
    ]
}

/// What the model knows of an event, from the dispatcher's answers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Open,
    With(ConsumerId),
    Finished,
}

fn strategy() -> impl Gen<Value = super::Strategy> {
    prop_oneof![
        Just(super::Strategy::RoundRobin),
        Just(super::Strategy::DispatchToSingle),
        Just(super::Strategy::Pinned),
    ]
}

fn check(
    d: &Dispatcher<u128>,
    model: &BTreeMap<u128, Seen>,
    caps: &HashMap<ConsumerId, usize>,
) -> Result<(), TestCaseError> {
    for (id, cap, in_flight) in d.consumers() {
        // A paused consumer (capacity 0) keeps what it held when paused.
        prop_assert!(
            in_flight <= cap || cap == 0,
            "consumer {id} holds {in_flight} > {cap}"
        );
        prop_assert_eq!(caps.get(&id), Some(&cap));
    }
    let lowest_open = model
        .iter()
        .find(|(_, s)| **s != Seen::Finished)
        .map(|(k, _)| *k);
    if let (Some(c), Some(open)) = (d.checkpoint(), lowest_open) {
        prop_assert!(c < open, "checkpoint {c} passed unfinished event {open}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_event_is_finished_once_and_in_flight_at_one_consumer(
        strategy in strategy(),
        max_retry in 0u32..3,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut d: Dispatcher<u128> = Dispatcher::new(rules(strategy, max_retry), None);
        let mut model: BTreeMap<u128, Seen> = BTreeMap::new();
        let mut caps: HashMap<ConsumerId, usize> = HashMap::new();
        let mut next_key = 0u128;
        let mut next_consumer = 0u64;
        let mut now = 0u64;
        let mut parked = Vec::new();

        let deliver = |out: Vec<Delivery<u128>>, model: &mut BTreeMap<u128, Seen>, caps: &HashMap<ConsumerId, usize>| -> Result<(), TestCaseError> {
            for del in out {
                let EventKey::Source(k) = del.key else { unreachable!() };
                prop_assert_eq!(del.item, k);
                let seen = model.get(&k).copied();
                prop_assert!(caps.get(&del.consumer) != Some(&0), "event {} delivered to paused consumer {}", k, del.consumer);
                prop_assert!(
                    seen == Some(Seen::Open),
                    "event {} delivered to {} while {:?}", k, del.consumer, seen
                );
                model.insert(k, Seen::With(del.consumer));
            }
            Ok(())
        };

        for op in ops {
            match op {
                Op::Push => {
                    d.push(EventKey::Source(next_key), (next_key % 5) as u64, next_key);
                    model.insert(next_key, Seen::Open);
                    next_key += 1;
                }
                Op::Connect(cap) => {
                    d.connect(next_consumer, cap);
                    caps.insert(next_consumer, cap);
                    next_consumer += 1;
                }
                Op::Disconnect(i) => {
                    let ids: Vec<_> = d.consumers().into_iter().map(|c| c.0).collect();
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        d.disconnect(id);
                        caps.remove(&id);
                        for s in model.values_mut() {
                            if *s == Seen::With(id) { *s = Seen::Open; }
                        }
                    }
                }
                Op::Pause(i) => {
                    let ids: Vec<_> = d.consumers().into_iter().map(|c| c.0).collect();
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        d.pause(id);
                        caps.insert(id, 0);
                    }
                }
                Op::Dispatch => deliver(d.dispatch(now), &mut model, &caps)?,
                Op::Ack(i) | Op::Nack(i, _) => {
                    let held: Vec<(u128, ConsumerId)> = model.iter()
                        .filter_map(|(k, s)| match s { Seen::With(c) => Some((*k, *c)), _ => None })
                        .collect();
                    if held.is_empty() { continue; }
                    let (k, c) = held[i % held.len()];
                    let key = EventKey::Source(k);
                    let action = match op {
                        Op::Nack(_, a) => Some([NackAction::Park, NackAction::Retry, NackAction::Skip, NackAction::Stop][a as usize]),
                        _ => None,
                    };
                    match action {
                        None | Some(NackAction::Skip) => {
                            d.ack(key);
                            model.insert(k, Seen::Finished);
                        }
                        Some(NackAction::Stop) => {
                            d.nack(c, key, NackAction::Stop);
                            caps.remove(&c);
                            for s in model.values_mut() {
                                if *s == Seen::With(c) { *s = Seen::Open; }
                            }
                        }
                        Some(a) => {
                            d.nack(c, key, a);
                            // Park, or a retry past the limit, parks; otherwise it waits.
                            model.insert(k, Seen::Open);
                        }
                    }
                }
                Op::Advance(ms) => {
                    now += ms;
                    let late: Vec<u128> = d.in_flight().into_keys()
                        .filter_map(|k| match k { EventKey::Source(k) => Some(k), _ => None })
                        .collect();
                    d.expire(now);
                    let still = d.in_flight();
                    for k in late {
                        if !still.contains_key(&EventKey::Source(k)) {
                            model.insert(k, Seen::Open);
                        }
                    }
                }
                Op::FinishParking => {
                    for (key, _, item) in d.take_parking() {
                        let EventKey::Source(k) = key else { unreachable!() };
                        prop_assert_eq!(item, k);
                        prop_assert!(model.get(&k) == Some(&Seen::Open), "parking {} while {:?}", k, model.get(&k));
                        d.parked(key);
                        model.insert(k, Seen::Finished);
                        parked.push(k);
                    }
                }
            }
            check(&d, &model, &caps)?;
        }

        // Drain: one consumer acks everything; every event ends finished.
        d.connect(u64::MAX, 4);
        caps.insert(u64::MAX, 4);
        for _ in 0..10_000 {
            for (key, _, _) in d.take_parking() {
                let EventKey::Source(k) = key else { unreachable!() };
                d.parked(key);
                model.insert(k, Seen::Finished);
            }
            let out = d.dispatch(now);
            // Events held by consumers that never answer come back after their timeout.
            if out.is_empty() && d.outstanding() > 0 {
                now += 1_000;
                d.expire(now);
                for s in model.values_mut() {
                    if matches!(s, Seen::With(_)) { *s = Seen::Open; }
                }
                continue;
            }
            deliver(out.clone(), &mut model, &caps)?;
            for del in out {
                d.ack(del.key);
                let EventKey::Source(k) = del.key else { unreachable!() };
                model.insert(k, Seen::Finished);
            }
            check(&d, &model, &caps)?;
            if d.outstanding() == 0 { break; }
        }
        prop_assert_eq!(d.outstanding(), 0);
        prop_assert!(model.values().all(|s| *s == Seen::Finished));
        prop_assert_eq!(d.checkpoint(), next_key.checked_sub(1));
        prop_assert_eq!(d.finished(), next_key as u64);
    }
}
