//! Generates the gRPC server code from `proto/` with the protoc that ships inside the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Event data and metadata stay `Bytes` from the socket to the store.
    config.bytes(["."]);
    // Events read go out through a hand-written encoding (src/event_message.rs).
    config.extern_path(
        ".event_store.client.streams.ReadResp.ReadEvent.RecordedEvent",
        "crate::event_message::EventMessage",
    );
    // Proposed events' metadata is two keys taken out by name: no hashing needed.
    config.btree_map([
        ".event_store.client.streams.AppendReq.ProposedMessage.metadata",
        ".event_store.client.streams.BatchAppendReq.ProposedMessage.metadata",
    ]);
    // A read event's `link` is always empty from us: boxed, it keeps the message small.
    config.boxed(".event_store.client.streams.ReadResp.ReadEvent.link");
    let protos = [
        "proto/shared.proto",
        "proto/status.proto",
        "proto/gossip.proto",
        "proto/serverfeatures.proto",
        "proto/streams.proto",
        "proto/persistent.proto",
    ];
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_build::configure()
        .build_client(false)
        .build_transport(false)
        .codec_path("crate::codec::ProtoCodec")
        .compile_protos_with_config(config, &protos, &includes)?;
    Ok(())
}
