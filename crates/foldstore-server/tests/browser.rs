//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, with the `fantoccini` client), against a server on `127.0.0.1:0`
//! over a temporary SQLite store.
//!
//! - `live_tail_shows_an_appended_event_without_a_reload`: the acceptance test
//!   for the UI: open the live tail, append through the API, see the event appear;
//! - `every_page_renders_and_screenshots`: opens every page at a desktop and a narrow
//!   width and in the dark colour scheme, checks each rendered without an error, and
//!   saves screenshots. With
//!   `FOLDSTORE_SCREENSHOTS=1` they go to `docs/screenshots/` (see
//!   `scripts/screenshots.sh`), else to a temporary folder.
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the tests print SKIPPED
//! and pass, unless `FOLDSTORE_REQUIRE_BROWSER=1` (set in CI), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use fantoccini::{Client, Locator};
use foldstore_server::ServerConfig;
use foldstore_server::testkit::browser::{Driver, browser_available};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{Value, json};

async fn sqlite_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("foldstore.db"), SqliteOptions::default())
        .await
        .unwrap();
    let server = TestServer::start(Arc::new(store), ServerConfig::default()).await;
    (server, dir)
}

/// Waits until the page's router finished rendering `hash`.
async fn rendered(client: &Client, hash: &str) {
    let selector = format!("body[data-ready=\"{hash}\"]");
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&selector))
        .await
        .unwrap_or_else(|e| panic!("page {hash} did not render: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_shows_an_appended_event_without_a_reload() {
    if !browser_available("live_tail_shows_an_appended_event_without_a_reload") {
        return;
    }
    let (server, _dir) = sqlite_server().await;
    let driver = Driver::start();
    let client = driver.session(1280, 900, false).await;

    client.goto(&server.url("/#/tail")).await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#tail-status.live"))
        .await
        .expect("the live tail connects");
    // A mark on this document: a reload would lose it.
    client
        .execute("window.__sameDocument = 42; return null;", vec![])
        .await
        .unwrap();

    let answer = server
        .append(
            "order-7",
            json!([{"type": "OrderPlaced", "data": {"total": 129.5, "note": "<b>not markup</b>"}}]),
        )
        .await;
    let position = answer["position"].as_str().unwrap().to_owned();

    let selector = format!("#tail-list li.event[data-position=\"{position}\"]");
    let row = client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&selector))
        .await
        .expect("the appended event appears in the live tail");
    let text = row.text().await.unwrap();
    assert!(text.contains("OrderPlaced"), "row text: {text}");
    assert!(text.contains("order-7"), "row text: {text}");

    // Event content is text, never markup.
    let injected = client
        .execute(
            "return document.querySelectorAll('#tail-list b').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0));
    let same = client
        .execute("return window.__sameDocument;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(42), "the page was reloaded");
    let count = client.find(Locator::Id("tail-count")).await.unwrap();
    assert_eq!(count.text().await.unwrap(), "1 event");

    // The tail of one stream (the stream page's link) shows that stream only.
    client
        .execute(
            "location.hash = '#/tail?stream=order-7'; return null;",
            vec![],
        )
        .await
        .unwrap();
    rendered(&client, "/tail?stream=order-7").await;
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#tail-status.live"))
        .await
        .expect("the stream tail connects");
    let other = server
        .append("order-70", json!([{"type": "OrderPlaced", "data": {}}]))
        .await;
    let mine = server
        .append("order-7", json!([{"type": "OrderPaid", "data": {}}]))
        .await;
    let selector = format!(
        "#tail-list li.event[data-position=\"{}\"]",
        mine["position"].as_str().unwrap()
    );
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&selector))
        .await
        .expect("the stream's event appears");
    let rows = client
        .execute(
            "return Array.from(document.querySelectorAll('#tail-list li.event')).map(e => e.dataset.position);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        json!([mine["position"]]),
        "only order-7's event, not order-70's ({other})"
    );
    let same = client
        .execute("return window.__sameDocument;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(42), "the page was reloaded");
    client.close().await.unwrap();
}

/// Streams and events that make the pages look like a store in use.
async fn seed(server: &TestServer) -> Value {
    for (order, customer, items) in [
        ("order-1041", "ada", 3),
        ("order-1042", "grace", 1),
        ("order-1043", "edsger", 2),
    ] {
        let mut events = vec![json!({
            "type": "OrderPlaced",
            "data": {"order_id": order, "customer": customer, "currency": "EUR"},
            "metadata": {"correlation_id": format!("req-{order}"), "user_agent": "checkout-web/4.2"}
        })];
        for i in 0..items {
            events.push(json!({
                "type": "ItemAdded",
                "data": {"sku": format!("SKU-{}", 100 + i * 7), "quantity": i + 1, "unit_price": 19.9 + f64::from(i)},
                "metadata": {"correlation_id": format!("req-{order}")}
            }));
        }
        events.push(json!({"type": "OrderPaid", "data": {"amount": 59.7, "method": "card"}}));
        server.append(order, json!(events)).await;
    }
    for user in ["ada", "grace", "edsger", "barbara"] {
        server
            .append(
                &format!("user-{user}"),
                json!([{"type": "UserRegistered", "data": {"name": user, "email": format!("{user}@example.org"), "plan": "pro"}}]),
            )
            .await;
    }
    server
        .append(
            "inventory-SKU-100",
            json!([{"type": "StockAdjusted", "data": {"delta": -3, "reason": "order-1041", "warehouse": "ams-1"}}]),
        )
        .await;
    server
        .append(
            "order-1041",
            json!([{"type": "OrderShipped", "data": {"carrier": "PostNL", "tracking": "3SABCD1234567", "items": [{"sku": "SKU-100", "quantity": 1}, {"sku": "SKU-107", "quantity": 2}]}, "metadata": {"correlation_id": "req-order-1041", "causation_id": "pick-88"}}]),
        )
        .await
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_and_screenshots() {
    if !browser_available("every_page_renders_and_screenshots") {
        return;
    }
    let keep = std::env::var("FOLDSTORE_SCREENSHOTS").as_deref() == Ok("1");
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = if keep {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        tmp.path().to_owned()
    };
    std::fs::create_dir_all(&dir).unwrap();

    let (server, _db) = sqlite_server().await;
    let last = seed(&server).await;
    let position = last["position"].as_str().unwrap().to_owned();
    let driver = Driver::start();

    for (suffix, width, height, dark) in [
        ("desktop", 1280, 860, false),
        ("narrow", 390, 844, false),
        ("dark", 1280, 860, true),
    ] {
        let client = driver.session(width, height, dark).await;
        let pages = [
            ("dashboard", "/".to_owned()),
            ("streams", "/streams".to_owned()),
            ("stream", "/streams/order-1041".to_owned()),
            ("event", format!("/events/{position}")),
        ];
        let scheme = client
            .execute(
                "return matchMedia('(prefers-color-scheme: dark)').matches;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            scheme,
            json!(dark),
            "the colour scheme of the {suffix} session"
        );
        for (name, hash) in &pages {
            client
                .goto(&server.url(&format!("/#{hash}")))
                .await
                .unwrap();
            rendered(&client, hash).await;
            if *name == "dashboard" {
                // Two samples of the rate, with appends between them.
                tokio::time::sleep(Duration::from_millis(2300)).await;
                server
                    .append(
                        "user-ada",
                        json!([{"type": "EmailChanged", "data": {"email": "ada@lovelace.dev"}}]),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(2100)).await;
            }
            let errors = client
                .execute(
                    "return document.querySelectorAll('.error-box').length;",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(errors, json!(0), "page {name} shows an error");
            let overflow = client
                .execute(
                    "return document.documentElement.scrollWidth - window.innerWidth;",
                    vec![],
                )
                .await
                .unwrap();
            assert!(
                overflow.as_i64().unwrap() <= 0,
                "page {name} scrolls sideways at {width} pixels ({overflow} too wide)"
            );
            screenshot(&client, &dir, &format!("{name}-{suffix}")).await;
        }

        client.goto(&server.url("/#/tail")).await.unwrap();
        client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("#tail-status.live"))
            .await
            .unwrap();
        let answer = server
            .append(
                "order-1044",
                json!([
                    {"type": "OrderPlaced", "data": {"order_id": "order-1044", "customer": "barbara"}},
                    {"type": "ItemAdded", "data": {"sku": "SKU-114", "quantity": 1}},
                    {"type": "OrderPaid", "data": {"amount": 24.0, "method": "ideal"}}
                ]),
            )
            .await;
        let last = answer["position"].as_str().unwrap().to_owned();
        client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(&format!("li.event[data-position=\"{last}\"]")))
            .await
            .unwrap();
        // Open the newest row, as someone reading the tail would.
        client
            .find(Locator::Css("#tail-list li.event .event-head"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1700)).await; // the highlight fades
        screenshot(&client, &dir, &format!("tail-{suffix}")).await;
        client.close().await.unwrap();
    }
    for name in ["dashboard", "streams", "stream", "event", "tail"] {
        for suffix in ["desktop", "narrow", "dark"] {
            assert!(dir.join(format!("{name}-{suffix}.png")).exists());
        }
    }
}
