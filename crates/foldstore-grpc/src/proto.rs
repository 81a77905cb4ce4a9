//! The message and service types generated from `proto/` (KurrentDB's wire format).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// Package `event_store.client` and its sub-packages.
pub mod event_store {
    /// Package `event_store.client`: shared types.
    pub mod client {
        tonic::include_proto!("event_store.client");

        /// Package `event_store.client.streams`.
        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }

        /// Package `event_store.client.persistent_subscriptions`.
        pub mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }

        /// Package `event_store.client.gossip`.
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }

        /// Package `event_store.client.server_features`.
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
    }
}

/// Package `google.rpc`.
pub mod google {
    /// The status carried in BatchAppend responses.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
