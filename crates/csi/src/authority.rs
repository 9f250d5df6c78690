//! The kubelet's plugin watcher (v1.34) dials registration sockets with the
//! socket's path as the HTTP/2 `:authority`, which is not an authority; h2
//! (under tonic) rejects such a request as malformed (PROTOCOL_ERROR), so a
//! Rust registrar is never registered (hyperium/h2#487,
//! kubernetes/kubernetes#112597 fixed the kubelet's CSI client only).
//!
//! This sits between the kubelet's connection and the server: it passes the
//! server's bytes through and, in the client's, decodes each request's
//! header block (HEADERS + CONTINUATION frames) and encodes it again with
//! `:authority: localhost`, as grpc-go itself sends over unix sockets now.
//! Everything else is forwarded unchanged.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Serves `client` through a rewriting pipe; the returned end goes to the server.
pub fn rewrite(client: tokio::net::UnixStream) -> tokio::io::DuplexStream {
    let (server_end, ours) = tokio::io::duplex(64 * 1024);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = forward_requests(&mut from_client, &mut to_server).await {
            tracing::debug!(error = %e, "registration connection ended");
        }
        let _ = to_server.shutdown().await;
    });
    server_end
}

async fn forward_requests<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    let mut decoder = hpack::Decoder::new();
    let mut encoder = hpack::Encoder::new();
    // A header block being collected: stream, flags of its HEADERS frame, bytes.
    let mut block: Option<(u32, u8, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match kind {
            HEADERS => {
                let fragment = header_fragment(&payload, flags)?;
                block = Some((stream, flags, fragment.to_vec()));
            }
            CONTINUATION if block.is_some() => {
                if let Some((_, _, bytes)) = block.as_mut() {
                    bytes.extend_from_slice(&payload);
                }
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        }
        if flags & END_HEADERS == 0 {
            continue;
        }
        let Some((stream, first_flags, bytes)) = block.take() else {
            continue;
        };
        let headers = decoder.decode(&bytes).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("HPACK: {e:?}"))
        })?;
        let rewritten: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| {
                if name == b":authority" {
                    (name, b"localhost".to_vec())
                } else {
                    (name, value)
                }
            })
            .collect();
        let encoded = encoder.encode(rewritten.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let out_flags = (first_flags & END_STREAM) | END_HEADERS;
        let len = encoded.len() as u32;
        let mut out = Vec::with_capacity(9 + encoded.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[HEADERS, out_flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&encoded);
        to.write_all(&out).await?;
    }
}

/// A HEADERS frame's header block fragment: without its padding and
/// priority fields.
fn header_fragment(payload: &[u8], flags: u8) -> std::io::Result<&[u8]> {
    let invalid =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, "a malformed HEADERS frame");
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = *payload.first().ok_or_else(invalid)? as usize;
        start = 1;
        end = end.checked_sub(pad).ok_or_else(invalid)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_authority_is_replaced_and_everything_else_kept() {
        let mut client_encoder = hpack::Encoder::new();
        let block = client_encoder.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (
                &b":authority"[..],
                &b"/var/lib/kubelet/plugins_registry/x-reg.sock"[..],
            ),
            (
                &b":path"[..],
                &b"/pluginregistration.Registration/GetInfo"[..],
            ),
        ]);
        // Split over HEADERS (padded) and CONTINUATION, then a DATA frame.
        let (a, b) = block.split_at(block.len() / 2);
        let mut input = PREFACE.to_vec();
        let mut headers = vec![2u8];
        headers.extend_from_slice(a);
        headers.extend_from_slice(&[0, 0]);
        for (kind, flags, payload) in [
            (HEADERS, PADDED, headers),
            (CONTINUATION, END_HEADERS, b.to_vec()),
            (0, 1, b"data".to_vec()),
        ] {
            input.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            input.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
            input.extend_from_slice(&payload);
        }
        let mut output = Vec::new();
        forward_requests(&mut input.as_slice(), &mut output)
            .await
            .unwrap();
        assert_eq!(&output[..PREFACE.len()], PREFACE);
        let frame = &output[PREFACE.len()..];
        let len = u32::from_be_bytes([0, frame[0], frame[1], frame[2]]) as usize;
        assert_eq!((frame[3], frame[4]), (HEADERS, END_HEADERS));
        let decoded = hpack::Decoder::new().decode(&frame[9..9 + len]).unwrap();
        assert_eq!(decoded[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(
            decoded[2].1,
            b"/pluginregistration.Registration/GetInfo".to_vec()
        );
        assert_eq!(&frame[9 + len + 9..], b"data");
    }
}
