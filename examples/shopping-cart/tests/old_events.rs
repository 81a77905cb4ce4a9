//! Carts an older version of the shop wrote (`ItemAdded` version 1: `product`, `qty`,
//! a `price` in euros) load, take new items and check out with the right total, on a
//! SQLite file; and their snapshot records the upcast state, not the old shape.

use std::sync::Arc;

use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadStreamOptions};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use shopping_cart::cart::{CartEvent, CartId};
use shopping_cart::service::{Carts, SNAPSHOT_EVERY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_the_old_shop_filled_loads_grows_and_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("carts.db"), SqliteOptions::default())
        .await
        .unwrap();
    let cart = CartId(12);
    // What the old shop stored: version 1, with no schema version in the metadata.
    let old: Vec<NewEvent> = (0..SNAPSHOT_EVERY + 5)
        .map(|i| {
            NewEvent::json(
                "ItemAdded",
                &json!({ "cart": 12, "product": format!("p{}", i % 3), "qty": 1, "price": 1.25 }),
            )
            .unwrap()
        })
        .collect();
    store
        .append(&cart.stream(), ExpectedRevision::NoStream, old)
        .await
        .unwrap();

    let carts = Carts::new(Arc::new(store.clone()));
    let loaded = carts.load(cart).await.unwrap();
    assert_eq!(loaded.state.units(), 25);
    assert_eq!(
        loaded.state.lines["p0"].unit_price, 125,
        "euros became cents"
    );

    // That load folded all 25 events, more than the interval: it saved a snapshot.
    assert_eq!((loaded.snapshot_revision, loaded.events_folded), (None, 25));

    // The new shop adds to it, and the next load starts from the snapshot of the
    // upcast state.
    carts
        .add(cart, "tea", 2, 450, uuid::Uuid::now_v7())
        .await
        .unwrap();
    let reloaded = carts.load(cart).await.unwrap();
    assert_eq!(
        reloaded.snapshot_revision,
        Some(24),
        "the first load saved a snapshot"
    );
    assert_eq!(reloaded.events_folded, 1);
    assert_eq!(reloaded.state, {
        let mut expected = loaded.state.clone();
        let tea = shopping_cart::cart::Line {
            quantity: 2,
            unit_price: 450,
        };
        expected.lines.insert("tea".into(), tea);
        expected
    });
    let paid = carts.check_out(cart).await.unwrap();
    assert_eq!(
        paid.events,
        [CartEvent::CheckedOut {
            cart,
            total: 25 * 125 + 2 * 450,
            units: 27,
        }]
    );

    // The stored events stay as they were written: upcasting happens on read.
    let stored = store
        .read_stream(&cart.stream(), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let first: serde_json::Value = serde_json::from_slice(&stored[0].data).unwrap();
    assert_eq!(first["price"], 1.25);
    store.close().await.unwrap();
}
