//! A headless Chromium driven over WebDriver (chromedriver, through the `fantoccini`
//! client): the browser tests of the server's web UI use it, and so can an
//! application's tests of its own pages.
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium
//! chromium-driver`; foldstore's `.ci/run` installs them).
//!
//! ```no_run
//! use fantoccini::Locator;
//! use foldstore_server::testkit::browser::{Driver, browser_available};
//!
//! # async fn a_test() {
//! if !browser_available("a_test") {
//!     return; // skipped, and said so
//! }
//! let driver = Driver::start();
//! let page = driver.session(1280, 800, false).await;
//! page.goto("http://127.0.0.1:3000/").await.unwrap();
//! page.find(Locator::Css("h1")).await.unwrap();
//! # }
//! ```

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use serde_json::json;

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is installed. Without it a test prints a `SKIPPED` line naming
/// `test` and the packages to install, and should return; with
/// `FOLDSTORE_REQUIRE_BROWSER=1` (CI) this panics instead.
pub fn browser_available(test: &str) -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        if std::env::var("FOLDSTORE_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!(
                "FOLDSTORE_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install -y chromium chromium-driver)"
        );
    }
    present
}

/// A chromedriver process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts chromedriver. Check [`browser_available`] first.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Self { child, port }
    }

    /// Connects a headless browser session at `width` x `height`, in the dark colour
    /// scheme when `dark`.
    pub async fn session(&self, width: u32, height: u32, dark: bool) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={width},{height}"),
        ];
        if dark {
            args.push("--force-dark-mode".to_owned());
            args.push("--blink-settings=preferredColorScheme=0".to_owned());
        }
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let url = format!("http://127.0.0.1:{}", self.port);
        // chromedriver takes a moment to listen; it is an outside process, so poll.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    client.set_window_size(width, height).await.unwrap();
                    return client;
                }
                Err(e) if Instant::now() > deadline => panic!("no browser session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
