//! Cart commands on the toolkit's [`CommandHandler`], with the cart's upcasters and
//! snapshots: a load starts from the latest snapshot (one every
//! [`SNAPSHOT_EVERY`] events) and folds only the events after it.
//!
//! Every command carries an id seed: the device's request id for adds and removes,
//! the cart number for a checkout. A device that sends a request again after a
//! timeout gets the first answer back, and the cart changes once.

use std::sync::Arc;

use foldstore_core::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, EventStore, Loaded, RetryPolicy,
    SnapshotPolicy, SnapshotStore,
};
use uuid::Uuid;

use crate::cart::{Cart, CartCommand, CartDecider, CartError, CartEvent, CartId, upcasters};

/// Events between two snapshots of a cart.
pub const SNAPSHOT_EVERY: u64 = 20;

/// A failed cart command.
pub type CartCommandError = CommandError<CartError>;

/// The namespace of the ids derived from cart numbers (checkouts).
const CHECKOUTS: Uuid = Uuid::from_u128(0x6361_7274_2d63_6865_636b_6f75_7473_0001);

/// Cart commands over a store that keeps snapshots too (every foldstore backend
/// does). Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use shopping_cart::cart::CartId;
/// use shopping_cart::service::Carts;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let carts = Carts::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let cart = CartId(1);
/// let request = uuid::Uuid::now_v7();
/// carts.add(cart, "tea", 2, 450, request).await?;
/// // The phone lost the answer and sends the same request again: added once.
/// assert!(carts.add(cart, "tea", 2, 450, request).await?.already_applied);
/// assert_eq!(carts.load(cart).await?.state.units(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Carts {
    handler: Arc<CommandHandler<CartDecider>>,
}

impl Carts {
    /// Commands over `store`, its snapshots kept in the same store.
    pub fn new<S: EventStore + SnapshotStore + 'static>(store: Arc<S>) -> Self {
        let retry = RetryPolicy::contended();
        let handler = CommandHandler::new(store.clone(), CartDecider)
            .with_upcasters(upcasters())
            .with_snapshots(store, SnapshotPolicy::every(SNAPSHOT_EVERY))
            .with_retry(retry);
        Self {
            handler: Arc::new(handler),
        }
    }

    /// Puts `quantity` units of `sku` at `unit_price` cents into `cart`; `request` is
    /// the device's id for this request.
    pub async fn add(
        &self,
        cart: CartId,
        sku: &str,
        quantity: u32,
        unit_price: u64,
        request: Uuid,
    ) -> Result<CommandOutcome<CartEvent>, CartCommandError> {
        let command = CartCommand::Add {
            cart,
            sku: sku.to_owned(),
            quantity,
            unit_price,
        };
        self.handle(&command, request).await
    }

    /// Takes `sku` out of `cart`.
    pub async fn remove(
        &self,
        cart: CartId,
        sku: &str,
        request: Uuid,
    ) -> Result<CommandOutcome<CartEvent>, CartCommandError> {
        let command = CartCommand::Remove {
            cart,
            sku: sku.to_owned(),
        };
        self.handle(&command, request).await
    }

    /// Pays for `cart`.
    pub async fn check_out(
        &self,
        cart: CartId,
    ) -> Result<CommandOutcome<CartEvent>, CartCommandError> {
        let seed = Uuid::new_v5(&CHECKOUTS, &cart.0.to_be_bytes());
        self.handle(&CartCommand::CheckOut { cart }, seed).await
    }

    /// The cart now, with how it was loaded (from which snapshot, folding how many
    /// events).
    pub async fn load(&self, cart: CartId) -> Result<Loaded<Cart>, CartCommandError> {
        self.handler.load(&cart.stream()).await
    }

    async fn handle(
        &self,
        command: &CartCommand,
        seed: Uuid,
    ) -> Result<CommandOutcome<CartEvent>, CartCommandError> {
        let ctx = CommandContext::new().id_seed(seed);
        self.handler
            .handle(&command.cart().stream(), command, &ctx)
            .await
    }
}
