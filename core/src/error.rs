//! Every error okome replies with. Each message starts with a Redis error
//! code (`ERR`, `WRONGTYPE`; [`Error::Raw`] carries `NOPERM`, `OOM`,
//! `CROSSSLOT`, `READONLY`, `LOADING`) and names the argument at fault the
//! way the command's syntax and `COMMAND DOCS` do: by its lowercase name
//! (`token`, `ttl`, `window`, `plan_json`, a key part by its component
//! name); a keyword in capitals only where the keyword itself is at fault
//! (unknown, repeated, misplaced, missing its value).

use std::fmt;

/// An error reply. `Display` gives the exact text sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Wrong number of arguments for the named command.
    Arity(&'static str),
    /// An unknown or misplaced word, or a repeated option.
    Syntax(String),
    /// An argument that must be an integer is not one (or overflows 64 bits).
    NotInteger(&'static str),
    /// An integer outside the allowed range.
    OutOfRange {
        what: &'static str,
        value: i64,
        min: u64,
        max: u64,
        unit: &'static str,
    },
    /// A key component, token or other argument that must not be empty.
    Empty(&'static str),
    /// An argument larger than the configured maximum.
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
        config: &'static str,
    },
    /// A value that must be JSON (`what`: `plan_json`, `value_json`) is
    /// not; `detail` says where (a byte offset counted from 1).
    InvalidJson { what: &'static str, detail: String },
    /// A kind okome will not cache (the seed's hard rule).
    NotCacheable(String),
    /// `planner` given to `OKOME.CACHE.*`.
    PlannerViaCache,
    /// A kind `OKOME.KEY` does not know (it takes every kind, budgets too):
    /// the printable name given, and the kinds it takes as a list
    /// ([`crate::keys::Kind::unknown`]).
    UnknownKind { kind: String, known: String },
    /// A key argument that is not a well-formed okome key of the expected kind.
    BadKey(String),
    /// A key holding a value of another Redis type.
    WrongType,
    /// With `HASHED`, a prompt hash that is not 64 lowercase hex digits
    /// (`got`: its printable start; `len`: its length in bytes).
    NotPromptHash { got: String, len: usize },
    /// A reply whose full text (with its error code) was composed elsewhere: Redis Cluster routing, ACL refusals.
    Raw(String),
    /// A budget window (at the printable `key`) whose newest entry lies
    /// `ahead_ms` in the future, beyond the clock-skew allowance: see
    /// [`crate::limiter::Window::check_times`].
    WindowAhead {
        key: String,
        ahead_ms: u64,
        allowance_ms: i64,
    },
    /// A GCRA state (at the printable `key`) that the call's rate and
    /// burst could only have written under a clock `ahead_ms` ahead,
    /// beyond the clock-skew allowance: see [`crate::limiter::gcra`].
    ThrottleAhead {
        key: String,
        ahead_ms: u64,
        allowance_ms: i64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Arity(cmd) => write!(f, "ERR wrong number of arguments for '{cmd}' command"),
            Error::Syntax(msg) => write!(f, "ERR syntax error: {msg}"),
            Error::NotInteger(what) => write!(f, "ERR {what} is not an integer or out of range"),
            Error::OutOfRange {
                what,
                value,
                min,
                max,
                unit,
            } => {
                write!(f, "ERR {what} {value} is out of range: must be ")?;
                if min == max {
                    write!(f, "{min} {unit}")
                } else {
                    write!(f, "between {min} and {max} {unit}")
                }
            }
            Error::Empty(what) => write!(f, "ERR {what} must not be empty"),
            Error::TooLarge {
                what,
                len,
                max,
                config,
            } => write!(
                f,
                "ERR {what} is {len} bytes, larger than the {max}-byte limit (okome.{config})"
            ),
            Error::InvalidJson { what, detail } => {
                write!(f, "ERR {what} is not valid JSON ({detail})")
            }
            Error::NotPromptHash { got, len } => write!(
                f,
                "ERR prompt_hash must be the SHA-256 of the prompt as 64 lowercase hex digits \
                 (HASHED); got '{got}' ({len} bytes)"
            ),
            _ => self.fmt_data(f),
        }
    }
}

impl Error {
    /// The errors about kinds, keys and what they hold.
    fn fmt_data(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotCacheable(kind) => write!(
                f,
                "ERR kind '{kind}' is not cacheable: okome caches only read-only, deterministic, \
                 recomputable data (planner, model_meta, rag, tools, health); it never caches \
                 file writes, git operations, builds, agent memory or tool execution results"
            ),
            Error::PlannerViaCache => write!(
                f,
                "ERR kind 'planner' is read with OKOME.PLAN.GET and written with OKOME.PLAN.SET"
            ),
            Error::UnknownKind { kind, known } => write!(
                f,
                "ERR kind '{kind}' is not a kind of okome key: OKOME.KEY takes {known}"
            ),
            Error::BadKey(msg) => write!(f, "ERR {msg}"),
            Error::WindowAhead {
                key,
                ahead_ms,
                allowance_ms,
            } => write!(
                f,
                "ERR '{key}' holds an okome budget window whose newest entry is {ahead_ms} ms \
                 in the future, beyond the {allowance_ms} ms clock-skew allowance (written by \
                 another client, or under a clock that far ahead?); nothing was charged or written"
            ),
            Error::ThrottleAhead {
                key,
                ahead_ms,
                allowance_ms,
            } => write!(
                f,
                "ERR '{key}' holds an okome GCRA state that this rate and burst could only have \
                 written under a clock {ahead_ms} ms ahead, beyond the {allowance_ms} ms \
                 clock-skew allowance (written by another client, with a larger burst or a \
                 slower rate, or under a clock that far ahead?); nothing was charged or written"
            ),
            Error::WrongType => write!(
                f,
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            Error::Raw(msg) => write!(f, "{msg}"),
            // The argument errors, which `fmt` writes itself.
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}
