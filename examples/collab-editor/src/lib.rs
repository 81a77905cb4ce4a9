//! # collab-editor
//!
//! A collaborative text editor on foldstore: several people type into one document
//! at once, each sees the others' typing as it happens, and everyone ends with the
//! same text, in which each person's edit landed where it was meant.
//!
//! The idea: an edit names characters, not positions. Every character gets an id when
//! it is inserted (the revision of its edit and its index in it), and a deleted
//! character stays as a tombstone, so "insert after character X" means the same place
//! whatever was typed meanwhile. The log puts concurrent edits in one order; the
//! server never transforms an edit.
//!
//! - [`document`]: the document and its rules as a decider.
//! - [`service`]: edits through the toolkit's command handler.
//! - [`view`]: each document live in the server's memory, pushed over server-sent
//!   events.
//! - [`app`]: the editor page and its API (axum).
//!
//! Run it with `cargo run -p collab-editor` and open <http://127.0.0.1:3001> in two
//! windows.

pub mod app;
pub mod document;
pub mod service;
pub mod view;
