//! The page in real browsers (headless Chromium over WebDriver): what one person does
//! in one window appears in another without a reload, and a refusal is shown to the
//! person who was refused.
//!
//! Chromium and chromedriver come from Debian (`.ci/run` installs them). Without them
//! the test prints SKIPPED and passes, unless `FOLDSTORE_REQUIRE_BROWSER=1` (CI).

use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, Locator};
use foldstore_server::testkit::browser::{Driver, browser_available};
use serde_json::json;

/// Waits for the element at `xpath` in `page`.
async fn see(page: &Client, xpath: &str) -> fantoccini::elements::Element {
    page.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("{xpath} did not appear: {e}"))
}

/// The XPath of the card titled `title` in `column`.
fn card(column: &str, title: &str) -> String {
    format!("//section[@id='{column}']//div[@class='card'][div[text()='{title}']]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_in_one_window_shows_in_another_without_a_reload() {
    if !browser_available("a_move_in_one_window_shows_in_another_without_a_reload") {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = kanban::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let driver = Driver::start();
    let (alice, bob) = (
        driver.session(1100, 700, false).await,
        driver.session(1100, 700, false).await,
    );
    for page in [&alice, &bob] {
        page.goto(&url).await.unwrap();
        see(page, "//span[@id='status' and text()='live']").await;
    }
    // A mark on Bob's document: a reload would lose it.
    bob.execute("window.__sameDocument = 7; return null;", vec![])
        .await
        .unwrap();

    // Alice adds a card with the form; Bob sees it.
    alice
        .find(Locator::Id("title"))
        .await
        .unwrap()
        .send_keys("Water the plants")
        .await
        .unwrap();
    alice
        .find(Locator::Css("#add button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    see(&bob, &card("todo", "Water the plants")).await;

    // Alice starts it; Bob sees it move.
    let start = see(
        &alice,
        &format!(
            "{}//button[@title='Move right']",
            card("todo", "Water the plants")
        ),
    )
    .await;
    start.click().await.unwrap();
    see(&bob, &card("doing", "Water the plants")).await;

    // Two more fill "doing" (through the API, as another client would).
    let http = reqwest::Client::new();
    for title in ["Pay the bills", "Call the plumber", "Book the trip"] {
        let id: serde_json::Value = http
            .post(format!("{url}/cards"))
            .json(&json!({ "title": title }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if title != "Book the trip" {
            let moved = http
                .post(format!("{url}/cards/{}/move", id["id"]))
                .json(&json!({ "to": "doing" }))
                .send()
                .await
                .unwrap();
            assert_eq!(moved.status(), 204);
        }
    }
    see(&bob, "//section[@id='doing' and contains(@class, 'full')]").await;

    // Alice tries to start a fourth: she is told why, and nothing moves.
    let fourth = see(
        &alice,
        &format!(
            "{}//button[@title='Move right']",
            card("todo", "Book the trip")
        ),
    )
    .await;
    fourth.click().await.unwrap();
    let error = see(
        &alice,
        "//div[@id='error' and contains(text(), 'finish or move one out')]",
    )
    .await;
    assert!(error.text().await.unwrap().contains("limit"));
    see(&bob, &card("todo", "Book the trip")).await;

    let same = bob
        .execute("return window.__sameDocument;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(7), "Bob's page was reloaded");
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}
