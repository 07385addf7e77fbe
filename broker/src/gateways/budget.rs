//! [`LinkBudget`]: the bytes buffered across every gateway link (unparsed input and unwritten
//! output), capped, sans-io.
//!
//! Each link may hold up to its fair share of the cap (the cap divided by the links open) at
//! any time; it may go past its share only while the total stays under the cap. A link whose
//! growth would put the total over the cap while it holds more than its share is the one to
//! close: a flooding or non-reading link is cut, the links within their share are never
//! harmed, and the broker's memory for links stays under the cap.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

/// Which side of a link went past its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// Bytes received and not yet handled.
    Input,
    /// Bytes queued and not yet written.
    Output,
}

/// The cap and what every link holds. See the module docs.
#[derive(Debug)]
pub struct LinkBudget {
    cap: usize,
    total: usize,
    links: usize,
}

impl LinkBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        LinkBudget {
            cap,
            total: 0,
            links: 0,
        }
    }

    /// A link opened (holding nothing yet).
    pub fn open(&mut self) {
        self.links += 1;
    }

    /// A link that held `held` bytes closed.
    pub fn close(&mut self, held: usize) {
        self.links = self.links.saturating_sub(1);
        self.total = self.total.saturating_sub(held);
    }

    /// What one link may hold whatever the others do.
    pub fn share(&self) -> usize {
        self.cap / self.links.max(1)
    }

    /// Bytes held across all links.
    pub fn total(&self) -> usize {
        self.total
    }

    /// A link's holding went from `*held` to `input + output`. Recorded (and `*held` updated)
    /// unless it grew past its share with the total over the cap: then the link must be
    /// closed, and `Err` says which side of it is to blame (its holding stays as it was, for
    /// [`Self::close`]).
    pub fn update(&mut self, held: &mut usize, input: usize, output: usize) -> Result<(), Over> {
        let now = input + output;
        let total = self.total - (*held).min(self.total) + now;
        if now > *held && total > self.cap && now > self.share() {
            return Err(if input >= output {
                Over::Input
            } else {
                Over::Output
            });
        }
        self.total = total;
        *held = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_within_its_share_is_never_cut() {
        let mut b = LinkBudget::new(100);
        let (mut a, mut c) = (0, 0);
        b.open();
        b.open();
        assert_eq!(b.share(), 50);
        // a may use the whole cap while c holds nothing...
        assert_eq!(b.update(&mut a, 90, 0), Ok(()));
        // ...and c, within its share, still grows (the total passes the cap briefly);
        assert_eq!(b.update(&mut c, 40, 0), Ok(()));
        assert_eq!(b.total(), 130);
        // a, past its share, cannot grow any more while the total is over the cap;
        assert_eq!(b.update(&mut a, 91, 0), Err(Over::Input));
        assert_eq!(a, 90);
        // shrinking is always fine.
        assert_eq!(b.update(&mut a, 0, 10), Ok(()));
        assert_eq!(b.total(), 50);
        assert_eq!(b.update(&mut a, 0, 60), Ok(()));
        assert_eq!(b.update(&mut c, 0, 45), Ok(()));
        assert_eq!(b.update(&mut a, 0, 70), Err(Over::Output));
        b.close(a);
        assert_eq!(b.total(), 45);
        assert_eq!(b.share(), 100);
    }
}
