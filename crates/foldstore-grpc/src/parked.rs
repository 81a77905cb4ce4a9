//! The parked-event streams of persistent subscriptions under the names KurrentDB's
//! clients use: `$persistentsubscription-<stream>::<group>-parked`.
//!
//! Our store refuses stream names that start with `$`, so the core keeps a group's
//! parked events in `persistentsubscription-<stream>::<group>-parked` (the same name
//! without the `$`, see [`foldstore_core::persistent::parked_stream`]). Reads and
//! subscriptions of the `$` name read that stream, its metastream is
//! `$$$persistentsubscription-…-parked`, and every event of it carries the `$` name,
//! in the same way [`crate::metastream`] maps `$$<stream>`.

use std::borrow::Cow;

use foldstore_core::StreamName;
use foldstore_core::persistent::PARKED_CATEGORY;

/// What a parked stream's name ends with.
const SUFFIX: &str = "-parked";

/// Whether `name` (as stored) is a parked stream's.
fn is_parked(name: &str) -> bool {
    name.strip_prefix(PARKED_CATEGORY)
        .is_some_and(|rest| rest.starts_with('-') && rest.ends_with(SUFFIX))
}

/// The stored stream a client's `$persistentsubscription-…-parked` names, if it names
/// one.
pub(crate) fn stored(wire: &str) -> Option<StreamName> {
    let name = wire.strip_prefix('$')?;
    if !is_parked(name) {
        return None;
    }
    StreamName::new(name).ok()
}

/// What goes before the stored `name` in the name clients see: `$` for a parked
/// stream, nothing for the others.
pub(crate) fn wire_prefix(name: &str) -> &'static str {
    if is_parked(name) { "$" } else { "" }
}

/// The name clients see for `stream`: with the `$` for a parked stream.
pub(crate) fn wire_name(stream: &StreamName) -> Cow<'_, str> {
    let name = stream.as_str();
    match wire_prefix(name) {
        "" => Cow::Borrowed(name),
        prefix => Cow::Owned(format!("{prefix}{name}")),
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::persistent::{Target, parked_stream};

    use super::*;

    #[test]
    fn the_dollar_name_maps_to_the_core_parked_stream_and_back() {
        let target = Target::Stream(StreamName::new("orders-1").unwrap());
        let ours = parked_stream(&target, "mailer").unwrap();
        let wire = "$persistentsubscription-orders-1::mailer-parked";
        assert_eq!(stored(wire), Some(ours.clone()));
        assert_eq!(wire_name(&ours), wire);
        let all = parked_stream(&Target::All, "billing").unwrap();
        assert_eq!(
            wire_name(&all),
            "$persistentsubscription-$all::billing-parked"
        );
        assert_eq!(stored(&wire_name(&all)), Some(all));
    }

    #[test]
    fn other_names_pass_unchanged_or_are_not_mapped() {
        let plain = StreamName::new("orders-1").unwrap();
        assert_eq!(wire_name(&plain), "orders-1");
        assert_eq!(stored("$persistentsubscription-orders-1::g"), None);
        assert_eq!(stored("$settings"), None);
        assert_eq!(stored("persistentsubscription-orders-1::g-parked"), None);
    }
}
