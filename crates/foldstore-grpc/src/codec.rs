//! The codec of every service: prost's, with the encoder's buffer sized for a
//! streamed read and each message's room reserved before it is written.
//!
//! tonic packs the messages of a response that are ready at once into one buffer and
//! hands it to the connection once it holds [`YIELD_AT`] bytes. Its default buffer
//! starts at 8 KiB and doubles as it fills, copying what it holds each time, and a new
//! one starts small again after every hand-over: for a read of small events that is
//! more copying than writing the events themselves. Here the buffer starts large
//! enough for a full hand-over plus one more event ([`BUFFER`], below the 64 KiB at
//! which freeing a block makes glibc consolidate its heap), and each message reserves
//! its encoded length at once instead of growing the buffer byte by byte.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder, ProstCodec};

/// The bytes after which a response's messages are handed to the connection (tonic's
/// default).
const YIELD_AT: usize = 32 * 1024;

/// The encoder buffer's initial size.
const BUFFER: usize = 48 * 1024;

const _: () = assert!(BUFFER > YIELD_AT && BUFFER < 64 * 1024);

/// prost's codec with [`BUFFER`] and reserved writes (see the module docs).
#[derive(Debug)]
pub(crate) struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProtoEncoder<T>;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProtoEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// Writes one message into the response buffer after reserving its length.
#[derive(Debug)]
pub(crate) struct ProtoEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ProtoEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER, YIELD_AT)
    }
}
