//! The saga's command bus, [`Shop`]: each command goes to its decider through the
//! toolkit's [`CommandHandler`] (load, decide, append with the revision read, retry
//! when another writer came first), with the saga's ids, so a command dispatched
//! again appends nothing. Payments go through a simulated provider first.

use std::sync::Arc;

use async_trait::async_trait;
use foldstore_core::saga::{CommandBus, DispatchContext, DispatchError};
use foldstore_core::{CommandContext, CommandError, CommandHandler, EventStore, RetryPolicy};

use crate::order::{Card, OrderCommand, OrderDecider};
use crate::payment::{self, PaymentDecider};
use crate::saga::ShopCommand;
use crate::stock::{StockCommand, StockDecider};

/// The deciders behind the saga's commands, over one store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use order_saga::bus::Shop;
/// use order_saga::order::{Card, OrderCommand, OrderId, Status};
/// use order_saga::stock::Sku;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let shop = Shop::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let order = OrderId(1);
/// shop.order(&OrderCommand::Place { order, sku: Sku(1), quantity: 1, amount: 900, card: Card::Good })
///     .await?;
/// assert_eq!(shop.status(order).await?, Status::Placed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Shop {
    orders: Arc<CommandHandler<OrderDecider>>,
    stock: Arc<CommandHandler<StockDecider>>,
    payments: Arc<CommandHandler<PaymentDecider>>,
}

/// A failed command, for callers outside the saga.
pub type ShopError = Box<dyn std::error::Error + Send + Sync>;

impl Shop {
    /// Handlers over `store`. A product's stock is contended by every order for it, so
    /// a command gets up to 100 attempts, with short waits.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let retry = RetryPolicy::contended();
        Self {
            orders: Arc::new(CommandHandler::new(store.clone(), OrderDecider).with_retry(retry)),
            stock: Arc::new(CommandHandler::new(store.clone(), StockDecider).with_retry(retry)),
            payments: Arc::new(CommandHandler::new(store, PaymentDecider).with_retry(retry)),
        }
    }

    /// Handles an order command (placing an order, say) outside the saga.
    pub async fn order(&self, command: &OrderCommand) -> Result<(), ShopError> {
        let stream = command.order().stream();
        self.orders
            .handle(&stream, command, &CommandContext::new())
            .await?;
        Ok(())
    }

    /// Handles a stock command (restocking, say) outside the saga.
    pub async fn stock(&self, command: &StockCommand) -> Result<(), ShopError> {
        let stream = command.sku().stream();
        self.stock
            .handle(&stream, command, &CommandContext::new())
            .await?;
        Ok(())
    }

    /// Where an order stands.
    pub async fn status(
        &self,
        order: crate::order::OrderId,
    ) -> Result<crate::order::Status, ShopError> {
        Ok(self.orders.load(&order.stream()).await?.state.status)
    }
}

/// A refusal by a decider is the saga's to compensate; anything else (the store was
/// unreachable, every attempt lost a race) is worth retrying.
fn dispatch_error<E: std::fmt::Display + std::fmt::Debug>(e: CommandError<E>) -> DispatchError {
    match e {
        CommandError::Rejected(reason) => DispatchError::rejected(reason.to_string()),
        other => DispatchError::transient(other.to_string()),
    }
}

#[async_trait]
impl CommandBus<ShopCommand> for Shop {
    async fn dispatch(
        &self,
        command: ShopCommand,
        context: DispatchContext,
    ) -> Result<(), DispatchError> {
        let ctx = CommandContext::from(&context);
        match command {
            ShopCommand::Order(c) => self
                .orders
                .handle(&c.order().stream(), &c, &ctx)
                .await
                .map(drop)
                .map_err(dispatch_error),
            ShopCommand::Stock(c) => self
                .stock
                .handle(&c.sku().stream(), &c, &ctx)
                .await
                .map(drop)
                .map_err(dispatch_error),
            ShopCommand::Pay { charge, card } => match card {
                Card::Good => self
                    .payments
                    .handle(&payment::stream(charge.order), &charge, &ctx)
                    .await
                    .map(drop)
                    .map_err(dispatch_error),
                Card::Declined => Err(DispatchError::rejected("the card was declined")),
                Card::Unreachable => Err(DispatchError::transient(
                    "the payment provider did not answer",
                )),
            },
        }
    }
}
