//! The frames of an `orch alloc exec` session, shared by the CLI and the client: binary
//! WebSocket messages whose first byte says what the rest is.
//!
//! CLI -> client: `STDIN` bytes, `STDIN_EOF` (no payload), `RESIZE` rows and columns
//! (two big-endian u16). Client -> CLI: `STDOUT` and `STDERR` bytes, then `EXIT` with
//! the command's exit code (big-endian i32; 128 + signal when a signal ended it) as the
//! last frame. A setup failure after the upgrade is one text message, the JSON error
//! body `{"error": ...}`.

pub const STDIN: u8 = 0;
pub const STDIN_EOF: u8 = 1;
pub const RESIZE: u8 = 2;
pub const STDOUT: u8 = 3;
pub const STDERR: u8 = 4;
pub const EXIT: u8 = 5;

/// A frame: `kind` then `payload`.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// The `RESIZE` frame for a terminal of `rows` x `cols`.
pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut payload = rows.to_be_bytes().to_vec();
    payload.extend_from_slice(&cols.to_be_bytes());
    frame(RESIZE, &payload)
}

/// Rows and columns from a `RESIZE` payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [r0, r1, c0, c1] => Some((
            u16::from_be_bytes([*r0, *r1]),
            u16::from_be_bytes([*c0, *c1]),
        )),
        _ => None,
    }
}

/// The `EXIT` frame for `code`.
pub fn exit(code: i32) -> Vec<u8> {
    frame(EXIT, &code.to_be_bytes())
}

/// The exit code from an `EXIT` payload.
pub fn parse_exit(payload: &[u8]) -> Option<i32> {
    <[u8; 4]>::try_from(payload).ok().map(i32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(frame(STDOUT, b"hi"), vec![STDOUT, b'h', b'i']);
        let r = resize(40, 120);
        assert_eq!((r[0], parse_resize(&r[1..])), (RESIZE, Some((40, 120))));
        let e = exit(-3);
        assert_eq!((e[0], parse_exit(&e[1..])), (EXIT, Some(-3)));
        assert_eq!(parse_exit(b"xy"), None);
        assert_eq!(parse_resize(b"xyz"), None);
    }
}
