//! A sale: more orders than stock, cards that pay, are declined or never answer, and
//! the checks that every order ended as it should.
//!
//! [`run_sale`] restocks a few products, places many orders at once while the saga
//! runs, restarts the saga's runner halfway (it resumes from its recorded position),
//! waits until only the orders whose payment never answers are left waiting, moves
//! the saga's clock past the payment timeout, and waits until every order has ended.
//! [`SaleReport::assert_holds`] then checks the whole log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::projection::Stopper;
use foldstore_core::saga::{
    DeadLetter, ManualClock, SagaError, SagaOptions, SagaRunner, dead_letter_stream,
};
use foldstore_core::{
    DomainEvent, EventStore, ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use crate::bus::Shop;
use crate::order::{CancelReason, Card, OrderCommand, OrderEvent, OrderId, Status};
use crate::payment::PaymentEvent;
use crate::saga::{OrderSaga, PAYMENT_TIMEOUT, SAGA_NAME};
use crate::stock::{Sku, StockCommand, StockEvent};

/// The shape of a sale.
#[derive(Debug, Clone)]
pub struct SaleConfig {
    /// Products (`Sku(0)` ..).
    pub products: u32,
    /// Units of each in stock at the start.
    pub units: u32,
    /// Orders placed.
    pub orders: u32,
    /// Tasks placing them at once.
    pub placers: usize,
    /// The most units one order buys.
    pub max_quantity: u32,
    /// The price of a unit, in cents.
    pub price: u64,
    /// Replays a sale.
    pub seed: u64,
}

impl SaleConfig {
    /// 240 orders of 1 to 3 units (about 480 in all) from 16 tasks, for 3 products of
    /// 120 units each: some orders find no stock, some of them after units that
    /// cancelled orders gave back went to others. One card in six is declined and one
    /// in six never answers.
    pub fn standard(seed: u64) -> Self {
        Self {
            products: 3,
            units: 120,
            orders: 240,
            placers: 16,
            max_quantity: 3,
            price: 900,
            seed,
        }
    }
}

/// Why a sale could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// A command outside the saga failed.
    #[error("a command failed: {0}")]
    Command(String),
    /// The saga's runner failed.
    #[error("the saga failed: {0}")]
    Saga(#[from] SagaError),
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Read(#[from] ReadError),
    /// The orders did not settle in time.
    #[error("{0}")]
    Stuck(String),
    /// The log holds something the sale's streams should not.
    #[error("the log holds what no command of the sale wrote: {0}")]
    BadLog(String),
}

/// The whole log of a sale, by stream.
#[derive(Debug)]
pub struct SaleReport {
    /// The configuration.
    pub config: SaleConfig,
    /// Each order's events.
    pub orders: BTreeMap<OrderId, Vec<OrderEvent>>,
    /// Each product's stock events.
    pub stock: BTreeMap<Sku, Vec<StockEvent>>,
    /// Each order's payment events.
    pub payments: BTreeMap<OrderId, Vec<PaymentEvent>>,
    /// The saga's dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

/// Runs a sale over `store`.
pub async fn run_sale(
    store: Arc<dyn EventStore>,
    config: &SaleConfig,
) -> Result<SaleReport, SaleError> {
    let shop = Shop::new(store.clone());
    for n in 0..config.products {
        let restock = StockCommand::Restock {
            sku: Sku(n),
            quantity: config.units,
        };
        shop.stock(&restock)
            .await
            .map_err(|e| SaleError::Command(e.to_string()))?;
    }
    let clock = ManualClock::starting_at(chrono::Utc::now());
    let runner = Runner::start(&store, &shop, &clock)?;

    let mut placers = Vec::new();
    for placer in 0..config.placers {
        let (shop, config) = (shop.clone(), config.clone());
        placers.push(tokio::spawn(
            async move { place(&shop, &config, placer).await },
        ));
    }
    // Halfway through, the runner stops and another starts, as after a redeploy.
    let (first, second) = placers.split_at_mut(config.placers / 2);
    for p in first {
        p.await.map_err(|e| SaleError::Command(e.to_string()))??;
    }
    runner.stop().await?;
    let runner = Runner::start(&store, &shop, &clock)?;
    for p in second {
        p.await.map_err(|e| SaleError::Command(e.to_string()))??;
    }

    // Everything settles but the orders whose provider never answers: their events
    // go to the dead-letter stream, and they wait for their timeout.
    wait_until(
        store.as_ref(),
        "orders left waiting only for a payment timeout",
        |s| {
            let waiting = s.statuses.values().filter(|v| !v.0.is_final()).count();
            let timing_out = s
                .statuses
                .values()
                .filter(|(status, card)| *status == Status::Reserved && *card == Card::Unreachable)
                .count();
            s.statuses.len() == config.orders as usize
                && waiting == timing_out
                && s.dead_letters == timing_out
        },
    )
    .await?;
    clock.advance(PAYMENT_TIMEOUT + chrono::Duration::minutes(1));
    wait_until(store.as_ref(), "every order ended", |s| {
        s.statuses.values().all(|v| v.0.is_final())
    })
    .await?;
    runner.stop().await?;
    SaleReport::read(store.as_ref(), config).await
}

/// One placer: orders `placer`, `placer + placers`, ...
async fn place(shop: &Shop, config: &SaleConfig, placer: usize) -> Result<(), SaleError> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (placer as u64).wrapping_mul(0x51ed));
    for n in (placer as u32..config.orders).step_by(config.placers) {
        let quantity = rng.random_range(1..=config.max_quantity);
        let card = match rng.random_range(0..6) {
            0 => Card::Declined,
            1 => Card::Unreachable,
            _ => Card::Good,
        };
        let place = OrderCommand::Place {
            order: OrderId(n),
            sku: Sku(rng.random_range(0..config.products)),
            quantity,
            amount: u64::from(quantity) * config.price,
            card,
        };
        shop.order(&place)
            .await
            .map_err(|e| SaleError::Command(e.to_string()))?;
    }
    Ok(())
}

/// A saga runner on a task of its own.
struct Runner {
    stopper: Stopper,
    task: JoinHandle<Result<(), SagaError>>,
}

impl Runner {
    fn start(
        store: &Arc<dyn EventStore>,
        shop: &Shop,
        clock: &ManualClock,
    ) -> Result<Self, SagaError> {
        // Short retries: a card that never answers is tried three times, then its
        // event is dead-lettered.
        let options = SagaOptions {
            retry_delay: Duration::from_millis(2),
            ..SagaOptions::default()
        };
        let mut runner = SagaRunner::new(store.clone(), OrderSaga, shop.clone())?
            .clock(clock.clone())
            .options(options);
        let stopper = Stopper::new();
        let signal = stopper.signal();
        let task = tokio::spawn(async move { runner.run(signal).await });
        Ok(Self { stopper, task })
    }

    async fn stop(self) -> Result<(), SagaError> {
        self.stopper.stop();
        self.task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// What the waits look at.
struct Snapshot {
    /// Each order's status and card.
    statuses: HashMap<OrderId, (Status, Card)>,
    /// Dead letters so far.
    dead_letters: usize,
}

async fn wait_until(
    store: &dyn EventStore,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Result<(), SaleError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut statuses = HashMap::new();
        for (order, events) in read_by_stream(store, "order", OrderEvent::from_recorded).await? {
            let status = events
                .iter()
                .fold(crate::order::Order::default(), |o, e| o.evolve(e));
            let card = status.terms.map_or(Card::Good, |t| t.2);
            statuses.insert(OrderId(order), (status.status, card));
        }
        let snapshot = Snapshot {
            statuses,
            dead_letters: read_dead_letters(store).await?.len(),
        };
        if done(&snapshot) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let mut left: Vec<_> = snapshot
                .statuses
                .iter()
                .filter(|(_, (s, _))| !s.is_final())
                .collect();
            left.sort_by_key(|(o, _)| **o);
            left.truncate(10);
            return Err(SaleError::Stuck(format!(
                "waited 60 s for {what}; {} dead letters; first orders not ended: {left:?}",
                snapshot.dead_letters
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event of `category` in `$all`, decoded, by the number after `category-`.
async fn read_by_stream<E>(
    store: &dyn EventStore,
    category: &str,
    decode: impl Fn(&RecordedEvent) -> Result<E, foldstore_core::DecodeError>,
) -> Result<BTreeMap<u32, Vec<E>>, SaleError> {
    const PAGE: usize = 1000;
    let filter = foldstore_core::EventFilter::category(category)?;
    let mut streams: BTreeMap<u32, Vec<E>> = BTreeMap::new();
    let mut from = None;
    loop {
        let mut options = ReadAllOptions::forwards()
            .max_count(PAGE)
            .filter(filter.clone());
        options.from = from;
        let page = store.read_all(options).await?;
        for event in &page {
            let n = event.stream.id().parse().map_err(|_| {
                SaleError::BadLog(format!("a stream {} without a number", event.stream))
            })?;
            let decoded = decode(event)
                .map_err(|e| SaleError::BadLog(format!("{} does not decode: {e}", event.stream)))?;
            streams.entry(n).or_default().push(decoded);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => from = Some(last.position.next()),
            _ => return Ok(streams),
        }
    }
}

async fn read_dead_letters(store: &dyn EventStore) -> Result<Vec<DeadLetter>, SaleError> {
    match store
        .read_stream(
            &dead_letter_stream(SAGA_NAME),
            ReadStreamOptions::forwards(),
        )
        .await
    {
        Ok(events) => events
            .iter()
            .map(|e| e.json::<DeadLetter>())
            .collect::<Result<_, _>>()
            .map_err(|e| SaleError::BadLog(format!("a dead letter does not decode: {e}"))),
        Err(ReadError::StreamNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

impl SaleReport {
    async fn read(store: &dyn EventStore, config: &SaleConfig) -> Result<Self, SaleError> {
        Ok(Self {
            config: config.clone(),
            orders: by_order(read_by_stream(store, "order", OrderEvent::from_recorded).await?),
            stock: read_by_stream(store, "stock", StockEvent::from_recorded)
                .await?
                .into_iter()
                .map(|(n, v)| (Sku(n), v))
                .collect(),
            payments: by_order(
                read_by_stream(store, "payment", PaymentEvent::from_recorded).await?,
            ),
            dead_letters: read_dead_letters(store).await?,
        })
    }

    /// Checks every rule; panics with what broke. Returns how many orders ended each
    /// way.
    ///
    /// - Every order placed has one of four histories: placed, reserved, paid,
    ///   confirmed; or placed and cancelled for lack of stock; or placed, reserved and
    ///   cancelled because its card was declined, or because its payment timed out.
    ///   Which one follows from its card, so nothing ended twice or the wrong way.
    /// - A card was charged exactly once for each confirmed order, for its amount,
    ///   and never for a cancelled one.
    /// - Replaying each product's stock: no reservation took more than was available,
    ///   each order reserved at most once and was released at most once and only
    ///   after its reservation; exactly the orders that reserved stock and were then
    ///   cancelled got it back; what is left is the first stock minus what the
    ///   confirmed orders bought.
    /// - Each order whose payment never answered left one dead letter, naming its
    ///   `StockReserved` event.
    pub fn assert_holds(&self) -> BTreeMap<&'static str, usize> {
        use CancelReason as R;
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut bought: HashMap<Sku, u32> = HashMap::new();
        let mut reserved_orders: HashMap<OrderId, (Sku, u32)> = HashMap::new();
        let mut released_orders: HashMap<OrderId, Sku> = HashMap::new();
        assert_eq!(
            self.orders.len(),
            self.config.orders as usize,
            "every order was placed"
        );
        for (&order, events) in &self.orders {
            let Some(OrderEvent::Placed {
                sku,
                quantity,
                amount,
                card,
                ..
            }) = events.first().cloned()
            else {
                panic!("order {order} does not start with Placed: {events:?}");
            };
            let shape: Vec<&str> = events.iter().map(event_name).collect();
            let ending = match (shape.as_slice(), events.last()) {
                (["Placed", "StockReserved", "Paid", "Confirmed"], _) => "confirmed",
                (
                    ["Placed", "Cancelled"],
                    Some(OrderEvent::Cancelled {
                        reason: R::OutOfStock,
                        ..
                    }),
                ) => "out_of_stock",
                (
                    ["Placed", "StockReserved", "Cancelled"],
                    Some(OrderEvent::Cancelled {
                        reason: R::PaymentDeclined,
                        ..
                    }),
                ) => "declined",
                (
                    ["Placed", "StockReserved", "Cancelled"],
                    Some(OrderEvent::Cancelled {
                        reason: R::PaymentTimedOut,
                        ..
                    }),
                ) => "timed_out",
                _ => panic!("order {order} has a history no order may have: {events:?}"),
            };
            let expected = match card {
                Card::Good => ["confirmed", "out_of_stock"],
                Card::Declined => ["declined", "out_of_stock"],
                Card::Unreachable => ["timed_out", "out_of_stock"],
            };
            assert!(
                expected.contains(&ending),
                "order {order} paid by {card:?} ended {ending}"
            );
            *counts.entry(ending).or_default() += 1;

            let charges = self.payments.get(&order).map_or(&[][..], Vec::as_slice);
            if ending == "confirmed" {
                assert_eq!(
                    charges,
                    [PaymentEvent::Charged { order, amount }],
                    "confirmed order {order} is charged once"
                );
                *bought.entry(sku).or_default() += quantity;
            } else {
                assert!(
                    charges.is_empty(),
                    "cancelled order {order} was charged: {charges:?}"
                );
            }
            if shape.contains(&"StockReserved") {
                reserved_orders.insert(order, (sku, quantity));
            }
            if ending != "confirmed" && ending != "out_of_stock" {
                released_orders.insert(order, sku);
            }
        }

        let mut stock_reserved: HashMap<OrderId, (Sku, u32)> = HashMap::new();
        let mut stock_released: HashMap<OrderId, Sku> = HashMap::new();
        for (&sku, events) in &self.stock {
            let mut available: u32 = 0;
            for event in events {
                match *event {
                    StockEvent::Restocked { quantity, .. } => available += quantity,
                    StockEvent::Reserved {
                        order, quantity, ..
                    } => {
                        assert!(
                            quantity <= available,
                            "product {sku} oversold: {quantity} reserved of {available}"
                        );
                        available -= quantity;
                        let twice = stock_reserved.insert(order, (sku, quantity));
                        assert!(twice.is_none(), "order {order} reserved twice");
                    }
                    StockEvent::Released {
                        order, quantity, ..
                    } => {
                        assert_eq!(
                            stock_reserved.get(&order),
                            Some(&(sku, quantity)),
                            "order {order} released what it did not reserve"
                        );
                        available += quantity;
                        let twice = stock_released.insert(order, sku);
                        assert!(twice.is_none(), "order {order} released twice");
                    }
                }
            }
            let sold = bought.get(&sku).copied().unwrap_or(0);
            assert_eq!(
                available,
                self.config.units - sold,
                "product {sku}: what is left is what the confirmed orders did not buy"
            );
        }
        assert_eq!(
            stock_reserved, reserved_orders,
            "reservations in stock and in orders"
        );
        assert_eq!(
            stock_released, released_orders,
            "stock released for each cancelled reservation"
        );

        let mut dead: Vec<String> = self
            .dead_letters
            .iter()
            .map(|d| format!("{} {}", d.event.stream, d.event.event_type))
            .collect();
        dead.sort();
        let mut timed_out: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e.last(),
                    Some(OrderEvent::Cancelled {
                        reason: R::PaymentTimedOut,
                        ..
                    })
                )
            })
            .map(|(o, _)| format!("{} StockReserved", o.stream()))
            .collect();
        timed_out.sort();
        assert_eq!(
            dead, timed_out,
            "one dead letter per payment that never answered"
        );
        counts
    }
}

fn by_order<E>(streams: BTreeMap<u32, Vec<E>>) -> BTreeMap<OrderId, Vec<E>> {
    streams.into_iter().map(|(n, v)| (OrderId(n), v)).collect()
}

fn event_name(event: &OrderEvent) -> &'static str {
    match event {
        OrderEvent::Placed { .. } => "Placed",
        OrderEvent::StockReserved { .. } => "StockReserved",
        OrderEvent::Paid { .. } => "Paid",
        OrderEvent::Confirmed { .. } => "Confirmed",
        OrderEvent::Cancelled { .. } => "Cancelled",
    }
}
