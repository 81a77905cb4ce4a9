//! Test support for applications built on this crate (feature `testkit`).
//!
//! - [`browser`]: a headless Chromium driven over WebDriver, to test a page that
//!   follows a live view as a user sees it.

pub mod browser;
