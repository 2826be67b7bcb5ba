//! Write receipts: knowing that the IRC server has read a line, on servers that do not echo it back (no
//! `echo-message`).
//!
//! A server handles a connection's lines in the order they arrive, so once the `PONG` to a `PING` written after a
//! line comes back ([RFC 2812 §3.7.2–3.7.3](https://www.rfc-editor.org/rfc/rfc2812#section-3.7.2)), the server has
//! read — and acted on — every line before it. [`Receipts`] keeps at most one such `PING` in flight per connection:
//! lines written while one is out wait for the next, which goes out when its `PONG` returns, so a busy connection
//! adds one `PING` per round trip, not one per line. A receipt whose connection ends before its `PONG` is dropped:
//! its waiter hears nothing certain and sends the line again on the next connection. Free of I/O.

use tokio::sync::oneshot;

/// Resolved once the server has read a line; an error if the connection ended first.
pub(crate) type Receipt = oneshot::Receiver<()>;

/// The prefix of our receipt `PING` tokens, telling their `PONG`s from the keep-alive's.
const TOKEN_PREFIX: &str = "lattice-r";

/// The receipts of one connection's written lines, waiting for a `PONG`.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    next_token: u64,
    /// The `PING` out now, and the receipts of the lines written before it.
    in_flight: Option<(String, Vec<oneshot::Sender<()>>)>,
    /// Receipts of lines written after that `PING`.
    waiting: Vec<oneshot::Sender<()>>,
}

impl Receipts {
    /// Lines with these receipts were just written: returns the token of a `PING` to write now, after them, when
    /// none is out yet.
    pub(crate) fn written(&mut self, receipts: impl IntoIterator<Item = oneshot::Sender<()>>) -> Option<String> {
        self.waiting.extend(receipts);
        self.ping_waiting()
    }

    /// A `PONG` with `token` came back: the receipts of the lines before its `PING` resolve. Returns the token of
    /// the next `PING` to send when more lines were written meanwhile.
    pub(crate) fn ponged(&mut self, token: &str) -> Option<String> {
        if !token.starts_with(TOKEN_PREFIX) || self.in_flight.as_ref().is_none_or(|(out, _)| out != token) {
            return None;
        }
        let (_, read) = self.in_flight.take()?;
        for receipt in read {
            // Its waiter may have given up (a retried message); nothing to tell then.
            let _ = receipt.send(());
        }
        self.ping_waiting()
    }

    /// Whether no receipt waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.waiting.is_empty()
    }

    fn ping_waiting(&mut self) -> Option<String> {
        if self.in_flight.is_some() || self.waiting.is_empty() {
            return None;
        }
        self.next_token += 1;
        let token = format!("{TOKEN_PREFIX}{}", self.next_token);
        self.in_flight = Some((token.clone(), std::mem::take(&mut self.waiting)));
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> (oneshot::Sender<()>, Receipt) {
        oneshot::channel()
    }

    #[test]
    fn one_ping_covers_the_lines_before_it_and_the_next_goes_out_on_its_pong() {
        let mut receipts = Receipts::default();
        let (first, mut first_read) = receipt();
        let (second, mut second_read) = receipt();
        let ping = receipts.written([first, second]).expect("a PING after the first lines");
        let (third, mut third_read) = receipt();
        assert_eq!(receipts.written([third]), None, "one PING in flight at a time");
        assert!(first_read.try_recv().is_err(), "not read before the PONG");

        let next = receipts.ponged(&ping).expect("a PING for the line written meanwhile");
        assert_eq!(first_read.try_recv(), Ok(()));
        assert_eq!(second_read.try_recv(), Ok(()));
        assert!(third_read.try_recv().is_err(), "written after the first PING");
        assert_eq!(receipts.ponged(&next), None);
        assert_eq!(third_read.try_recv(), Ok(()));
        assert!(receipts.is_idle());
    }

    #[test]
    fn pongs_of_other_pings_settle_nothing() {
        let mut receipts = Receipts::default();
        let (line, mut read) = receipt();
        let ping = receipts.written([line]).unwrap();
        for other in ["lattice", "irc.example.org", "lattice-r999", ""] {
            assert_eq!(receipts.ponged(other), None, "{other}");
        }
        assert!(read.try_recv().is_err());
        receipts.ponged(&ping);
        assert_eq!(read.try_recv(), Ok(()));
    }

    #[test]
    fn a_connection_that_ends_drops_its_receipts_unresolved() {
        let mut receipts = Receipts::default();
        let (line, mut read) = receipt();
        receipts.written([line]);
        drop(receipts);
        assert_eq!(read.try_recv(), Err(oneshot::error::TryRecvError::Closed));
    }

    #[test]
    fn writes_without_receipts_send_no_ping() {
        let mut receipts = Receipts::default();
        assert_eq!(receipts.written([]), None);
        assert!(receipts.is_idle());
    }
}
