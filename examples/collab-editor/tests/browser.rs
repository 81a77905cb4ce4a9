//! The editor in real browsers (headless Chromium over WebDriver): two people type
//! into one document at once, at different places, and both windows end with the
//! same text, holding both people's typing where each put it.
//!
//! Chromium and chromedriver come from Debian (`.ci/run` installs them). Without them
//! the test prints SKIPPED and passes, unless `FOLDSTORE_REQUIRE_BROWSER=1` (CI).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use foldstore_server::testkit::browser::{Driver, browser_available};
use serde_json::json;

/// The editor's text.
async fn text(page: &Client) -> String {
    let value = page
        .execute("return document.getElementById('editor').value;", vec![])
        .await
        .unwrap();
    value.as_str().unwrap().to_owned()
}

/// Waits until both pages show `expected`.
async fn both_show(pages: [&Client; 2], expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (a, b) = (text(pages[0]).await, text(pages[1]).await);
        if a == expected && b == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {expected:?}; the pages show {a:?} and {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `keys` at character `caret` (`None`: the end) of the page's editor.
async fn type_at(page: &Client, caret: Option<usize>, keys: &str) {
    let editor = page.find(Locator::Id("editor")).await.unwrap();
    editor.click().await.unwrap();
    let at = caret.map_or(json!(null), |c| json!(c));
    page.execute(
        "const e = document.getElementById('editor'); const at = arguments[0] ?? e.value.length; \
         e.focus(); e.setSelectionRange(at, at); return null;",
        vec![at],
    )
    .await
    .unwrap();
    for key in keys.chars() {
        editor.send_keys(&key.to_string()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_typing_at_once_end_with_the_same_text() {
    if !browser_available("two_people_typing_at_once_end_with_the_same_text") {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/d/notes", listener.local_addr().unwrap());
    let app = collab_editor::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let driver = Driver::start();
    let alice = driver.session(900, 600, false).await;
    let bob = driver.session(900, 600, false).await;
    for page in [&alice, &bob] {
        page.goto(&url).await.unwrap();
        page.wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath("//span[@id='status' and text()='live']"))
            .await
            .unwrap();
    }

    type_at(&alice, None, "Hello world").await;
    both_show([&alice, &bob], "Hello world").await;

    // At once: Bob types at the start while Alice types at the end.
    tokio::join!(
        type_at(&bob, Some(0), "Dear all: "),
        type_at(&alice, None, ", and goodbye")
    );
    both_show([&alice, &bob], "Dear all: Hello world, and goodbye").await;

    // At once again, in the middle: Alice deletes "world" while Bob types after "Hello".
    let delete = "\u{e003}".repeat(5); // Backspace
    tokio::join!(
        type_at(&alice, Some(21), &delete),
        type_at(&bob, Some(15), " there")
    );
    both_show([&alice, &bob], "Dear all: Hello there , and goodbye").await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}
