//! One call as a handler sees it: the user's arguments, and the tail of
//! declared keys okome's command filter appended (`okome_core::declared`).

use okome_core::declared::{Declared, Tail};
use okome_core::Error;

/// The arguments of a call, split from its declared keys.
pub struct Call<'a> {
    /// The arguments after the command name, without the tail.
    pub args: &'a [&'a [u8]],
    tail: Option<Tail<'a>>,
}

/// The refusal of a call whose tail is missing or is not what its
/// arguments derive (the filter did not run, or the configuration changed
/// between a `MULTI` and its `EXEC`).
const NOT_DECLARED: &str = "ERR okome: the keys this call touches are not the ones declared to Redis in its arguments (okome's command filter appends them as OKOME.R n key... OKOME.W n key... OKOME.RW n key...; on Valkey 9 it cannot from a script, so call okome commands from clients there); nothing was done";

impl<'a> Call<'a> {
    /// A call of a command that declares its keys: splits off the tail.
    pub fn declaring(args: &'a [&'a [u8]]) -> Call<'a> {
        match Tail::find(args) {
            Some(t) => Call {
                args: t.user(args),
                tail: Some(t),
            },
            None => Call { args, tail: None },
        }
    }

    /// A call of a command that touches no key (`OKOME.KEY`).
    pub fn plain(args: &'a [&'a [u8]]) -> Call<'a> {
        Call { args, tail: None }
    }

    /// Checks that the call declared exactly `keys`: Redis checked those
    /// (ACL, cluster slot, migration), so those are the keys it may touch.
    pub fn declare(&self, keys: &Declared) -> Result<(), Error> {
        match &self.tail {
            Some(t) if t.matches(keys) => Ok(()),
            _ => Err(Error::Raw(NOT_DECLARED.into())),
        }
    }
}
