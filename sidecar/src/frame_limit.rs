//! A guard in front of awc's WebSocket decoder: a frame whose header
//! announces a payload over the limit is refused as soon as the header
//! is in. awc's own check runs only once the whole payload has arrived,
//! so without this a hostile hub could announce 2^62 bytes and make the
//! sidecar buffer for as long as it keeps sending.
//!
//! It owns that one check ([`announced_len`] is pure and unit-tested); it
//! must never change, reorder or drop a frame within the limit, and it
//! knows nothing of the protocol.

use actix_codec::{Decoder, Encoder};
use awc::error::WsProtocolError;
use awc::ws::{Codec, Frame, Message};
use bytes::BytesMut;

/// awc's codec, refusing oversized frames by their header.
pub(crate) struct FrameLimit {
    inner: Codec,
    max: usize,
}

impl FrameLimit {
    pub(crate) fn new(inner: Codec, max: usize) -> FrameLimit {
        FrameLimit { inner, max }
    }
}

impl Decoder for FrameLimit {
    type Item = Frame;
    type Error = WsProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WsProtocolError> {
        if announced_len(src).is_some_and(|len| len > self.max as u64) {
            return Err(WsProtocolError::Overflow);
        }
        self.inner.decode(src)
    }
}

impl Encoder<Message> for FrameLimit {
    type Error = WsProtocolError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), WsProtocolError> {
        self.inner.encode(item, dst)
    }
}

/// The payload length the frame at the start of `buf` announces, once
/// enough of its header is there (RFC 6455 §5.2: 7 bits, or 126 and 16
/// bits, or 127 and 64 bits).
pub(crate) fn announced_len(buf: &[u8]) -> Option<u64> {
    let len7 = buf.get(1)? & 0x7f;
    match len7 {
        126 => Some(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as u64),
        127 => Some(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)),
        n => Some(n as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_length_form_once_the_header_is_in() {
        assert_eq!(announced_len(&[]), None);
        assert_eq!(announced_len(&[0x81]), None);
        assert_eq!(announced_len(&[0x81, 5]), Some(5));
        assert_eq!(
            announced_len(&[0x81, 0x80 | 125]),
            Some(125),
            "mask bit ignored"
        );
        assert_eq!(announced_len(&[0x81, 126, 1]), None);
        assert_eq!(announced_len(&[0x81, 126, 1, 0]), Some(256));
        assert_eq!(announced_len(&[0x81, 127, 0, 0, 0, 0, 0, 0x10]), None);
        let big = [[0x81, 127].as_slice(), &(1u64 << 62).to_be_bytes()].concat();
        assert_eq!(announced_len(&big), Some(1 << 62));
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let mut codec = FrameLimit::new(Codec::new().client_mode(), 1024);
        let mut header = BytesMut::from(&[0x81u8, 127, 0, 0, 0, 0, 0, 0, 4, 1][..]);
        assert!(matches!(
            codec.decode(&mut header),
            Err(WsProtocolError::Overflow)
        ));
        // Within the limit, frames pass as awc reads them.
        let mut codec = FrameLimit::new(Codec::new().client_mode(), 1024);
        let mut ok = BytesMut::from(&[0x81u8, 2, b'{', b'}'][..]);
        match codec.decode(&mut ok) {
            Ok(Some(Frame::Text(t))) => assert_eq!(&t[..], b"{}"),
            other => panic!("{other:?}"),
        }
        let mut partial = BytesMut::from(&[0x81u8, 126, 0][..]);
        assert!(matches!(codec.decode(&mut partial), Ok(None)));
    }
}
