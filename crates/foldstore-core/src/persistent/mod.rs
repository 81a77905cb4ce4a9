//! Persistent subscriptions: competing consumers over a stream or `$all`.
mod dispatch;

pub use dispatch::{
    ConsumerId, Delivery, DispatchRules, Dispatcher, EventKey, NackAction, ParkReason, Strategy,
};
