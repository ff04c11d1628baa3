//! RFC 1143 option negotiation (the Q method), for both sides of every option.

use bytes::BufMut;

use crate::command::{Side, Verb};
use crate::encoder::encode_negotiation;

/// Which options we agree to when the peer asks.
///
/// Local options are the ones we perform (the peer's `DO` gets our `WILL`); remote options
/// are the ones the peer performs (the peer's `WILL` gets our `DO`). Everything not accepted is
/// refused. The policy governs only what the peer asks; [`Negotiator::request`] enables an
/// option whatever the policy says.
///
/// ```
/// use vspc_telnet::{option, Policy, Side};
///
/// let policy = Policy::new().accept_both(option::BINARY).accept_remote(option::VMWARE_EXT);
/// assert!(policy.accepts(Side::Local, option::BINARY));
/// assert!(!policy.accepts(Side::Local, option::VMWARE_EXT));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    local: [u64; 4],
    remote: [u64; 4],
}

impl Policy {
    /// A policy that refuses everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accept performing `option` ourselves when the peer asks (`DO` -> `WILL`).
    #[must_use]
    pub fn accept_local(mut self, option: u8) -> Self {
        set_bit(&mut self.local, option);
        self
    }

    /// Also accept the peer performing `option` when it offers (`WILL` -> `DO`).
    #[must_use]
    pub fn accept_remote(mut self, option: u8) -> Self {
        set_bit(&mut self.remote, option);
        self
    }

    /// Both [`accept_local`](Self::accept_local) and [`accept_remote`](Self::accept_remote).
    #[must_use]
    pub fn accept_both(self, option: u8) -> Self {
        self.accept_local(option).accept_remote(option)
    }

    /// Whether the peer's request to enable `option` on `side` is granted.
    pub fn accepts(&self, side: Side, option: u8) -> bool {
        let bits = match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        };
        bits[usize::from(option >> 6)] & (1 << (option & 63)) != 0
    }
}

fn set_bit(bits: &mut [u64; 4], option: u8) {
    bits[usize::from(option >> 6)] |= 1 << (option & 63);
}

/// The RFC 1143 state of one side of one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptionState {
    /// Disabled.
    #[default]
    No,
    /// Enabled.
    Yes,
    /// We asked to disable and await the answer; still enabled until it comes.
    WantNo,
    /// We asked to enable and await the answer; still disabled until it comes.
    WantYes,
}

impl OptionState {
    /// Whether the option is in effect: `Yes`, or `WantNo` (until the peer confirms).
    pub fn is_enabled(self) -> bool {
        matches!(self, OptionState::Yes | OptionState::WantNo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Q {
    state: OptionState,
    /// The RFC 1143 "opposite" queue bit: after the pending answer, ask for the reverse.
    opposite: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    option: u8,
    local: Q,
    remote: Q,
}

/// A change of an option's effective state, produced by negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptionChange {
    /// Who performs the option.
    pub side: Side,
    /// The option code.
    pub option: u8,
    /// Whether it is now in effect.
    pub enabled: bool,
}

/// The Q method for every option and both sides.
///
/// Storage is sparse: only options that ever left `No` take space, so an endpoint that
/// negotiated five options holds five small entries. Replies are written to the caller's
/// buffer; the method guarantees that no reply is ever sent to a reply, so two endpoints with
/// any policies settle after a bounded exchange.
#[derive(Debug, Clone, Default)]
pub struct Negotiator {
    policy: Policy,
    entries: Vec<Entry>,
}

impl Negotiator {
    /// A negotiator with every option disabled, answering the peer by `policy`.
    pub fn new(policy: Policy) -> Self {
        Negotiator {
            policy,
            entries: Vec::new(),
        }
    }

    /// Frees the spare capacity of the option table.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; options already negotiated stay as they are.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The Q-method state of `option` on `side`.
    pub fn state(&self, side: Side, option: u8) -> OptionState {
        self.entries
            .iter()
            .find(|entry| entry.option == option)
            .map_or(OptionState::No, |entry| match side {
                Side::Local => entry.local.state,
                Side::Remote => entry.remote.state,
            })
    }

    /// Whether `option` is in effect on `side`.
    pub fn is_enabled(&self, side: Side, option: u8) -> bool {
        self.state(side, option).is_enabled()
    }

    fn q_mut(&mut self, side: Side, option: u8) -> &mut Q {
        let index = match self.entries.iter().position(|e| e.option == option) {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    option,
                    local: Q::default(),
                    remote: Q::default(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        match side {
            Side::Local => &mut entry.local,
            Side::Remote => &mut entry.remote,
        }
    }

    /// Handles the peer's `IAC <verb> <option>`, writing any reply to `out`. Returns the change
    /// of effective state, if there was one.
    pub fn receive(
        &mut self,
        verb: Verb,
        option: u8,
        out: &mut impl BufMut,
    ) -> Option<OptionChange> {
        let (side, positive) = match verb {
            Verb::Will => (Side::Remote, true),
            Verb::Wont => (Side::Remote, false),
            Verb::Do => (Side::Local, true),
            Verb::Dont => (Side::Local, false),
        };
        // Refusing what is already refused needs no entry and no reply.
        if !positive && self.state(side, option) == OptionState::No {
            return None;
        }
        let accepts = self.policy.accepts(side, option);
        let q = self.q_mut(side, option);
        let before = q.state.is_enabled();
        let (agree, refuse) = match side {
            Side::Local => (Verb::Will, Verb::Wont),
            Side::Remote => (Verb::Do, Verb::Dont),
        };
        let mut reply = None;
        use OptionState::{No, WantNo, WantYes, Yes};
        if positive {
            match (q.state, q.opposite) {
                (No, _) if accepts => {
                    q.state = Yes;
                    reply = Some(agree);
                }
                (No, _) => reply = Some(refuse),
                (Yes, _) => {}
                // The peer answered our refusal with an agreement: RFC 1143 calls it an error
                // and settles on the peer's word without replying.
                (WantNo, false) => q.state = No,
                (WantNo, true) => {
                    q.state = Yes;
                    q.opposite = false;
                }
                (WantYes, false) => q.state = Yes,
                (WantYes, true) => {
                    q.state = WantNo;
                    q.opposite = false;
                    reply = Some(refuse);
                }
            }
        } else {
            match (q.state, q.opposite) {
                (No, _) => {}
                (Yes, _) => {
                    q.state = No;
                    reply = Some(refuse);
                }
                (WantNo, false) => q.state = No,
                (WantNo, true) => {
                    q.state = WantYes;
                    q.opposite = false;
                    reply = Some(agree);
                }
                (WantYes, _) => {
                    q.state = No;
                    q.opposite = false;
                }
            }
        }
        let after = q.state.is_enabled();
        if let Some(verb) = reply {
            encode_negotiation(verb, option, out);
        }
        (before != after).then_some(OptionChange {
            side,
            option,
            enabled: after,
        })
    }

    /// The application asks to enable or disable `option` on `side`, writing the request to
    /// `out` when one is due. Asking for what is already so, or already asked, sends nothing;
    /// asking for the reverse of a pending request is queued and sent once the answer comes.
    /// A request never changes the effective state by itself: enabling takes effect when the
    /// peer agrees, disabling when it confirms (see [`receive`](Self::receive)).
    pub fn request(&mut self, side: Side, option: u8, enable: bool, out: &mut impl BufMut) {
        if !enable && self.state(side, option) == OptionState::No {
            return;
        }
        let q = self.q_mut(side, option);
        let (agree, refuse) = match side {
            Side::Local => (Verb::Will, Verb::Wont),
            Side::Remote => (Verb::Do, Verb::Dont),
        };
        use OptionState::{No, WantNo, WantYes, Yes};
        let send = match (enable, q.state, q.opposite) {
            (true, No, _) => {
                q.state = WantYes;
                Some(agree)
            }
            (false, Yes, _) => {
                q.state = WantNo;
                Some(refuse)
            }
            (true, WantNo, false) | (false, WantYes, false) => {
                q.opposite = true;
                None
            }
            (true, WantYes, true) | (false, WantNo, true) => {
                q.opposite = false;
                None
            }
            _ => None,
        };
        if let Some(verb) = send {
            encode_negotiation(verb, option, out);
        }
    }

    /// Options that are in effect, with their side.
    pub fn enabled(&self) -> impl Iterator<Item = (Side, u8)> + '_ {
        self.entries.iter().flat_map(|entry| {
            let local = entry
                .local
                .state
                .is_enabled()
                .then_some((Side::Local, entry.option));
            let remote = entry
                .remote
                .state
                .is_enabled()
                .then_some((Side::Remote, entry.option));
            local.into_iter().chain(remote)
        })
    }
}
