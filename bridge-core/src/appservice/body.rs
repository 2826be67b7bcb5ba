//! Reading a request body into memory up to a size limit.
//!
//! A body over the limit is not kept, but it is read on and thrown away (up to as much again as the limit), so the
//! client finishes sending and reads the refusal: a server that closes a connection with unread data resets it, and
//! the client then sees a connection error instead of `413`.

use axum::body::{Body, Bytes, HttpBody as _};
use bytes::BytesMut;
use futures::StreamExt as _;

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The body is larger than the limit.
    #[error("the body is {} bytes, over the limit of {limit} bytes", size(.received, .complete))]
    TooLarge {
        /// The limit it broke.
        limit: usize,
        /// The body's size as declared by `Content-Length`, or else how many bytes were read before reading stopped.
        received: u64,
        /// Whether `received` is the whole body's size.
        complete: bool,
    },
    /// The connection failed while the body was read.
    #[error("cannot read the body: {0}")]
    Read(#[source] axum::Error),
}

fn size(received: &u64, complete: &bool) -> String {
    if *complete { received.to_string() } else { format!("more than {received}") }
}

/// The whole body, or [`BodyError::TooLarge`] when it has more than `limit` bytes.
pub(super) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = body.size_hint().exact();
    let mut stream = body.into_data_stream();
    if let Some(declared) = declared.filter(|declared| *declared > limit as u64) {
        drain(&mut stream, 0, limit).await;
        return Err(BodyError::TooLarge { limit, received: declared, complete: true });
    }
    let mut buffer = BytesMut::with_capacity(declared.map_or(0, |declared| declared as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        if buffer.len() + chunk.len() > limit {
            let read = (buffer.len() + chunk.len()) as u64;
            drop(buffer);
            let (received, complete) = drain(&mut stream, read, limit).await;
            return Err(BodyError::TooLarge { limit, received, complete });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Reads the rest of a body and throws it away, stopping once `already + limit` bytes were seen in all; returns how
/// many that was and whether the body ended.
async fn drain(stream: &mut axum::body::BodyDataStream, already: u64, limit: usize) -> (u64, bool) {
    let mut received = already;
    let stop_after = already.saturating_add(limit as u64);
    while received <= stop_after {
        match stream.next().await {
            Some(Ok(chunk)) => received += chunk.len() as u64,
            Some(Err(_)) => return (received, false),
            None => return (received, true),
        }
    }
    (received, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent in chunks, without a `Content-Length`.
    fn chunked(chunks: &[usize]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|size| Ok(Bytes::from(vec![b'x'; *size]))).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_body_up_to_the_limit_is_read_whole() {
        assert_eq!(read_limited(Body::from(vec![b'x'; 10]), 10).await.unwrap().len(), 10);
        assert_eq!(read_limited(chunked(&[4, 4, 2]), 10).await.unwrap().len(), 10);
        assert_eq!(read_limited(Body::empty(), 10).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_its_size() {
        let declared = read_limited(Body::from(vec![b'x'; 11]), 10).await.unwrap_err();
        assert!(matches!(declared, BodyError::TooLarge { limit: 10, received: 11, complete: true }), "{declared:?}");
        let streamed = read_limited(chunked(&[6, 6, 3]), 10).await.unwrap_err();
        assert!(matches!(streamed, BodyError::TooLarge { received: 15, complete: true, .. }), "{streamed:?}");
        assert_eq!(streamed.to_string(), "the body is 15 bytes, over the limit of 10 bytes");
    }

    #[tokio::test]
    async fn draining_a_body_far_over_the_limit_stops() {
        let error = read_limited(chunked(&[8, 8, 8, 8, 8, 8]), 10).await.unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { received: 32, complete: false, .. }), "{error:?}");
        assert_eq!(error.to_string(), "the body is more than 32 bytes, over the limit of 10 bytes");
    }
}
