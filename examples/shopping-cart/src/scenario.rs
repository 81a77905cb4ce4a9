//! Many devices filling a few carts at once, and the checks that every cart kept its
//! rules.
//!
//! [`run_shoppers`] has devices add and remove products in random carts at once
//! (several devices share a cart, as a family's phones do), resend some requests as a
//! phone does after a timeout, and check half the carts out halfway through.
//! [`ShoppersReport::assert_holds`] then reads every cart's stream and checks it
//! against the answers the devices got and against a load from the latest snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldstore_core::{
    CommandError, EventStore, ReadError, ReadStreamOptions, SnapshotStore, deterministic_event_id,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::cart::{Cart, CartError, CartEvent, CartId, upcasters};
use crate::service::{CartCommandError, Carts, SNAPSHOT_EVERY};

/// The products, with their prices in cents.
pub const PRODUCTS: [(&str, u64); 8] = [
    ("tea", 450),
    ("coffee", 790),
    ("milk", 120),
    ("bread", 310),
    ("apples", 260),
    ("cheese", 680),
    ("rice", 199),
    ("honey", 540),
];

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct ShoppersConfig {
    /// Carts (`CartId(0)` ..).
    pub carts: u32,
    /// Devices at once.
    pub devices: usize,
    /// Requests per device.
    pub requests: usize,
    /// Replays a run.
    pub seed: u64,
}

impl ShoppersConfig {
    /// 24 devices, 30 requests each, over 8 carts.
    pub fn standard(seed: u64) -> Self {
        Self {
            carts: 8,
            devices: 24,
            requests: 30,
            seed,
        }
    }
}

/// What a device was told about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done: the event it appended.
    Done(CartEvent),
    /// Refused by the cart's rules.
    Refused(CartError),
}

/// Everything the devices were told.
#[derive(Debug)]
pub struct ShoppersReport {
    /// Each request's cart and first answer, by request id.
    pub answers: HashMap<Uuid, (CartId, Answer)>,
    /// Resends, each answered `already_applied` with the first answer's event.
    pub resends: usize,
    /// The carts checked out halfway, with their checkout events.
    pub checkouts: BTreeMap<CartId, CartEvent>,
    /// Each cart's stream, decoded, with each event's id.
    pub streams: BTreeMap<CartId, Vec<(Uuid, CartEvent)>>,
    /// Each cart as a load from its latest snapshot sees it, and how many events that
    /// load folded after the snapshot.
    pub loaded: BTreeMap<CartId, (Cart, u64)>,
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ShoppersError {
    /// A command failed for another reason than the cart's rules.
    #[error("a cart command failed: {0}")]
    Command(#[from] CartCommandError),
    /// Reading a stream failed.
    #[error("reading a cart failed: {0}")]
    Read(#[from] ReadError),
    /// A resend got another answer, or a task panicked.
    #[error("{0}")]
    Unexpected(String),
}

/// Runs the shoppers over `store`.
pub async fn run_shoppers<S: EventStore + SnapshotStore + 'static>(
    store: Arc<S>,
    config: &ShoppersConfig,
) -> Result<ShoppersReport, ShoppersError> {
    let carts = Carts::new(store.clone());
    let answers: Arc<Mutex<HashMap<Uuid, (CartId, Answer)>>> = Arc::default();
    let mut devices = Vec::new();
    for device in 0..config.devices {
        let (carts, answers, config) = (carts.clone(), answers.clone(), config.clone());
        devices.push(tokio::spawn(async move {
            run_device(&carts, &answers, &config, device).await
        }));
    }
    // Halfway through, the first half of the carts is checked out (each twice: the
    // second answer is the first one again).
    while answers.lock().expect("answers").len() < config.devices * config.requests / 2
        && !devices.iter().all(|d| d.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut checkouts = BTreeMap::new();
    for n in 0..config.carts / 2 {
        let first = carts.check_out(CartId(n)).await?;
        let again = carts.check_out(CartId(n)).await?;
        if !again.already_applied || again.events != first.events {
            return Err(ShoppersError::Unexpected(format!(
                "cart {n}'s second checkout answered {again:?}"
            )));
        }
        if let [event] = first.events.as_slice() {
            checkouts.insert(CartId(n), event.clone());
        }
    }
    let mut resends = 0;
    for device in devices {
        resends += device
            .await
            .map_err(|e| ShoppersError::Unexpected(e.to_string()))??;
    }

    let mut streams = BTreeMap::new();
    let mut loaded = BTreeMap::new();
    let upcasters = upcasters();
    for n in 0..config.carts {
        let cart = CartId(n);
        let events = match store
            .read_stream(&cart.stream(), ReadStreamOptions::forwards())
            .await
        {
            Ok(events) => events,
            Err(ReadError::StreamNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let decoded = events
            .iter()
            .map(|e| Ok((e.id, upcasters.decode::<CartEvent>(e)?)))
            .collect::<Result<Vec<_>, foldstore_core::DecodeError>>()
            .map_err(|e| ShoppersError::Unexpected(e.to_string()))?;
        streams.insert(cart, decoded);
        let load = carts.load(cart).await?;
        loaded.insert(cart, (load.state, load.events_folded));
    }
    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    Ok(ShoppersReport {
        answers,
        resends,
        checkouts,
        streams,
        loaded,
    })
}

/// One device: adds (four requests in five) or removes, resends one successful
/// request in eight. Returns how many it resent.
async fn run_device(
    carts: &Carts,
    answers: &Mutex<HashMap<Uuid, (CartId, Answer)>>,
    config: &ShoppersConfig,
    device: usize,
) -> Result<usize, ShoppersError> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (device as u64).wrapping_mul(0x2545_f491));
    let mut resends = 0;
    for _ in 0..config.requests {
        let cart = CartId(rng.random_range(0..config.carts));
        let (sku, price) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
        let request = Uuid::from_u128(rng.random());
        let adding = rng.random_ratio(4, 5);
        let quantity = rng.random_range(1..=3);
        let send = || async move {
            if adding {
                carts.add(cart, sku, quantity, price, request).await
            } else {
                carts.remove(cart, sku, request).await
            }
        };
        let first = send().await;
        let answer = match &first {
            Ok(outcome) => match outcome.events.as_slice() {
                [event] => Answer::Done(event.clone()),
                other => {
                    return Err(ShoppersError::Unexpected(format!(
                        "request {request} appended {other:?}"
                    )));
                }
            },
            Err(CommandError::Rejected(reason)) => Answer::Refused(reason.clone()),
            Err(e) => return Err(ShoppersError::Unexpected(e.to_string())),
        };
        let done = matches!(answer, Answer::Done(_));
        answers
            .lock()
            .expect("answers")
            .insert(request, (cart, answer));
        if done && rng.random_ratio(1, 8) {
            resends += 1;
            let again = send().await?;
            let first = first.expect("a done request");
            if !again.already_applied || again.events != first.events {
                return Err(ShoppersError::Unexpected(format!(
                    "request {request} was resent and answered {again:?}"
                )));
            }
        }
    }
    Ok(resends)
}

impl ShoppersReport {
    /// Checks every rule; panics with what broke. Returns how many requests got each
    /// answer.
    ///
    /// - Replaying each cart: nothing follows its checkout; the checkout's total and
    ///   units are those of the cart at that point; no product ever has more than
    ///   the limit.
    /// - Exactly the requests answered "done" are stored, each once, with the event
    ///   the device was told (its id derives from the request id); resends added
    ///   nothing.
    /// - The carts checked out are the first half, each once (unless it was empty,
    ///   and then refused).
    /// - A load from the latest snapshot gives the same cart as the replay, after
    ///   folding fewer than the snapshot interval's events.
    pub fn assert_holds(&self) -> BTreeMap<&'static str, usize> {
        let mut stored: HashMap<Uuid, (CartId, &CartEvent)> = HashMap::new();
        for (&cart, events) in &self.streams {
            let mut state = Cart::default();
            for (id, event) in events {
                assert!(
                    !state.checked_out,
                    "cart {cart} changed after its checkout: {event:?}"
                );
                if let CartEvent::CheckedOut { total, units, .. } = event {
                    assert_eq!(
                        (*total, *units),
                        (state.total(), state.units()),
                        "cart {cart}'s checkout"
                    );
                    assert_eq!(
                        self.checkouts.get(&cart),
                        Some(event),
                        "cart {cart} checked out by whom?"
                    );
                } else {
                    assert!(
                        stored.insert(*id, (cart, event)).is_none(),
                        "event {id} stored twice"
                    );
                }
                state = state.evolve(event);
                assert!(
                    state
                        .lines
                        .values()
                        .all(|l| l.quantity <= crate::cart::MAX_QUANTITY),
                    "cart {cart} over the quantity limit"
                );
            }
            let (loaded, folded) = &self.loaded[&cart];
            assert_eq!(
                loaded, &state,
                "cart {cart} loaded from its snapshot against the replay"
            );
            assert!(
                *folded < SNAPSHOT_EVERY,
                "cart {cart}'s load folded {folded} events after its snapshot"
            );
            assert_eq!(
                state.checked_out,
                self.checkouts.contains_key(&cart),
                "cart {cart} is checked out exactly when its checkout was answered"
            );
        }

        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (request, (cart, answer)) in &self.answers {
            let id = deterministic_event_id(*request, 0);
            let kept = stored.remove(&id);
            let name = match answer {
                Answer::Done(event) => {
                    assert_eq!(
                        kept,
                        Some((*cart, event)),
                        "request {request} is not stored as answered"
                    );
                    "done"
                }
                Answer::Refused(reason) => {
                    assert_eq!(kept, None, "refused request {request} was stored");
                    match reason {
                        CartError::CheckedOut(_) => "refused_checked_out",
                        CartError::NotInCart { .. } => "refused_not_in_cart",
                        _ => "refused_other",
                    }
                }
            };
            *counts.entry(name).or_default() += 1;
        }
        assert!(
            stored.is_empty(),
            "events no request answered for: {stored:?}"
        );
        counts.insert("resent", self.resends);
        counts.insert("checked_out", self.checkouts.len());
        counts
    }
}
