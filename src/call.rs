//! One call as a handler sees it: the user's arguments, the tail of
//! declared keys okome's command filter appended (`okome_core::declared`),
//! the time of the call and the configuration. What every handler needs
//! before it starts (parsing, checking the declared keys, the clock, the
//! configuration) is done here, once.

use crate::{cluster, config, rkey};
use okome_core::command::Request;
use okome_core::config::Config;
use okome_core::declared::{Declared, Tail};
use okome_core::Error;
use std::cell::OnceCell;

/// The arguments of a call, split from its declared keys.
pub struct Call<'a> {
    /// The arguments after the command name, without the tail.
    pub args: &'a [&'a [u8]],
    tail: Option<Tail<'a>>,
    /// The time of the call (Unix ms), read once for the whole call.
    pub now: i64,
    cfg: OnceCell<Config>,
}

/// The refusal of a call whose tail is missing or is not what its
/// arguments derive (the filter did not run, or the configuration changed
/// between a `MULTI` and its `EXEC`).
const NOT_DECLARED: &str = "ERR okome: the keys this call touches are not the ones declared to Redis in its arguments (okome's command filter appends them as OKOME.R n key... OKOME.W n key... OKOME.RW n key...; on Valkey 9 it cannot from a script, so call okome commands from clients there); nothing was done";

impl<'a> Call<'a> {
    fn new(args: &'a [&'a [u8]], tail: Option<Tail<'a>>) -> Call<'a> {
        Call {
            args,
            tail,
            now: rkey::now_ms(),
            cfg: OnceCell::new(),
        }
    }

    /// A call of a command that declares its keys: splits off the tail.
    pub fn declaring(args: &'a [&'a [u8]]) -> Call<'a> {
        match Tail::find(args) {
            Some(t) => Call::new(t.user(args), Some(t)),
            None => Call::new(args, None),
        }
    }

    /// A call of a command that touches no key (`OKOME.KEY`).
    pub fn plain(args: &'a [&'a [u8]]) -> Call<'a> {
        Call::new(args, None)
    }

    /// The configuration for this call, read once.
    pub fn cfg(&self) -> &Config {
        self.cfg.get_or_init(config::current)
    }

    /// The request `parse` makes of the arguments, once the keys it
    /// touches are checked to be the ones the call declared.
    pub fn request<R: Request>(
        &self,
        parse: impl FnOnce(&'a [&'a [u8]]) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.declared(parse(self.args)?)
    }

    /// [`Call::request`] for a grammar that reads the configuration
    /// (defaults and standards); the others never lock it.
    pub fn request_cfg<R: Request>(
        &self,
        parse: impl FnOnce(&'a [&'a [u8]], &Config) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.declared(parse(self.args, self.cfg())?)
    }

    fn declared<R: Request>(&self, req: R) -> Result<R, Error> {
        self.declare(&req.declared(cluster::enabled()))?;
        Ok(req)
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
