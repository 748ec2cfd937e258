//! What a command is made of: its description ([`Command`], [`Arg`]) and
//! the pieces every family's parser is built from ([`Options`] over typed
//! [`Keyword`]s, [`parse_int`], value checks). Each family file states its
//! commands with these; nothing here knows any one command.

use crate::config::{Bounds, Config, Standard};
use crate::declared::Declared;
pub use crate::int::parse_int;
use crate::keys::{self, printable, Kind};
use crate::{Error, Result};

/// An argument's type as `COMMAND DOCS` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Key,
    PureToken,
    OneOf,
    Block,
}

/// One argument: its `COMMAND DOCS` entry, and for a bounded number the
/// range its parser checks it against (and `COMMAND DOCS` and README show).
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    /// The argument's name, in lowercase: also how errors name it.
    pub name: &'static str,
    pub ty: Ty,
    /// The keyword that introduces it, if it is an option.
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    pub sub: &'static [Arg],
    pub bounds: Option<Bounds>,
}

pub const fn arg(name: &'static str, ty: Ty) -> Arg {
    Arg {
        name,
        ty,
        token: None,
        optional: false,
        multiple: false,
        sub: &[],
        bounds: None,
    }
}

impl Arg {
    pub const fn token(mut self, t: &'static str) -> Arg {
        self.token = Some(t);
        self
    }
    pub const fn optional(mut self) -> Arg {
        self.optional = true;
        self
    }
    pub const fn multiple(mut self) -> Arg {
        self.multiple = true;
        self
    }
    pub const fn sub(mut self, s: &'static [Arg]) -> Arg {
        self.sub = s;
        self
    }
    pub const fn bounds(mut self, b: Bounds) -> Arg {
        self.bounds = Some(b);
        self
    }

    /// The argument as an integer; an error names it.
    pub fn int(&self, word: &[u8]) -> Result<i64> {
        parse_int(self.name, word)
    }

    /// The argument as a number within its fixed range.
    pub fn fixed(&self, word: &[u8]) -> Result<u64> {
        let v = self.int(word)?;
        match self.bounds {
            Some(Bounds::Fixed(r)) => r.check(self.name, v),
            _ => Err(Error::Raw(format!(
                "ERR okome: {} has no fixed range",
                self.name
            ))),
        }
    }

    /// The argument as a number within `standard`, a configured standard
    /// in the unit of its bounds.
    pub fn within(&self, word: &[u8], standard: Standard) -> Result<u64> {
        let v = self.int(word)?;
        standard.check(self.name, v, self.bounds.map_or("", |b| b.unit()))
    }
}

/// The argument cluster clients route a command by: not a key itself
/// (`NOT_KEY`), only the hash tag of the keys the call declares.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Its position in the call, from 1 (the command name is 0).
    pub pos: i32,
    pub notes: &'static str,
}

/// A parsed call: the keys it touches, which its call must have declared
/// (`crate::declared`).
pub trait Request {
    /// `cluster`: whether the server runs in a cluster, where one call
    /// spans one slot.
    fn declared(&self, cluster: bool) -> Declared;
}

/// The keys a call of a command touches, derived from its arguments (the
/// user's, without the tail): what okome's command filter declares.
pub type Derive = fn(args: &[&[u8]], cfg: &Config, cluster: bool) -> Result<Declared>;

/// One command, whole: registration, `COMMAND DOCS`, the range table and
/// the command filter all read it from here.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// The full name, in lowercase (`okome.rate`).
    pub name: &'static str,
    /// Redis's arity: the number of arguments with the name, negative for
    /// "at least".
    pub arity: i32,
    /// Redis's command flags (`write deny-oom fast`).
    pub flags: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub args: &'static [Arg],
    /// The argument cluster clients route by, if not the first key.
    pub route: Option<Route>,
    /// How a call's keys are derived; `None` for a command that touches no
    /// key (`OKOME.KEY`).
    pub keys: Option<Derive>,
}

impl Command {
    /// Redis's reply to a call with the wrong number of arguments.
    pub const fn arity_error(&self) -> Error {
        Error::Arity(self.name)
    }
}

/// One bounded numeric argument of one command, by its `COMMAND DOCS`
/// name: a row of the range table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgRange {
    pub command: &'static str,
    pub arg: &'static str,
    pub bounds: Bounds,
}

// ------------------------------------------------------------ options

/// The option keywords of one command, as an enum: each is an argument of
/// the command's description, whose token is the keyword.
pub trait Keyword: Copy + PartialEq + 'static {
    /// Every option, in the order an error lists them.
    const ALL: &'static [Self];
    /// The argument this keyword introduces.
    fn arg(self) -> &'static Arg;

    /// The keyword as the user writes it.
    fn word(self) -> &'static str {
        self.arg().token.unwrap_or(self.arg().name)
    }

    /// Whether `word` is one of these keywords (any case).
    fn is_keyword(word: &[u8]) -> bool {
        Self::ALL
            .iter()
            .any(|k| k.word().as_bytes().eq_ignore_ascii_case(word))
    }
}

/// Declares an enum of option keywords, each naming the argument of the
/// command's description it introduces.
macro_rules! keywords {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $arg:path),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }
        impl $crate::command::spec::Keyword for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn arg(self) -> &'static $crate::command::spec::Arg {
                match self {
                    $($name::$variant => &$arg),+
                }
            }
        }
    };
}
pub(crate) use keywords;

/// Walks the options after the positional arguments.
pub struct Options<'a, 'b, K> {
    rest: &'b [&'a [u8]],
    seen: Vec<K>,
}

impl<'a, 'b, K: Keyword> Options<'a, 'b, K> {
    pub fn new(rest: &'b [&'a [u8]]) -> Self {
        Options {
            rest,
            seen: Vec::new(),
        }
    }

    /// The next option keyword, matched case-insensitively; an unknown or
    /// repeated one is a syntax error.
    pub fn keyword(&mut self) -> Result<Option<K>> {
        let Some((word, tail)) = self.rest.split_first() else {
            return Ok(None);
        };
        self.rest = tail;
        let k = K::ALL
            .iter()
            .copied()
            .find(|k| k.word().as_bytes().eq_ignore_ascii_case(word))
            .ok_or_else(|| {
                let known: Vec<&str> = K::ALL.iter().map(|k| k.word()).collect();
                Error::Syntax(format!(
                    "unknown option '{}' (expected one of: {})",
                    printable(word),
                    known.join(", ")
                ))
            })?;
        if self.seen.contains(&k) {
            return Err(Error::Syntax(format!(
                "option {} given more than once",
                k.word()
            )));
        }
        self.seen.push(k);
        Ok(Some(k))
    }

    /// The value following option `k`.
    pub fn value(&mut self, k: K) -> Result<&'a [u8]> {
        let (v, tail) = self
            .rest
            .split_first()
            .ok_or_else(|| Error::Syntax(format!("option {} needs a value", k.word())))?;
        self.rest = tail;
        Ok(v)
    }

    /// The integer following option `k`; an error names its argument.
    pub fn int(&mut self, k: K) -> Result<i64> {
        let v = self.value(k)?;
        k.arg().int(v)
    }

    /// The number following option `k`, within its argument's fixed range.
    pub fn fixed(&mut self, k: K) -> Result<u64> {
        let v = self.value(k)?;
        k.arg().fixed(v)
    }

    /// The number following option `k`, within a configured standard.
    pub fn within(&mut self, k: K, standard: Standard) -> Result<u64> {
        let v = self.value(k)?;
        k.arg().within(v, standard)
    }

    /// The non-empty token following option `k`.
    pub fn token(&mut self, k: K) -> Result<&'a [u8]> {
        let t = self.value(k)?;
        if t.is_empty() {
            return Err(Error::Empty(k.arg().name));
        }
        Ok(t)
    }
}

// ------------------------------------------------------------- values

/// Checks that `value` is at most `max` bytes (the config `okome.<config>`).
pub fn check_size(what: &'static str, value: &[u8], max: u64, config: &'static str) -> Result<()> {
    let len = value.len();
    if u64::try_from(len).map_or(true, |l| l > max) {
        return Err(Error::TooLarge {
            what,
            len,
            max: usize::try_from(max).unwrap_or(usize::MAX),
            config,
        });
    }
    Ok(())
}

/// Checks that `value` (the argument `what`: `plan_json`, `value_json`) is
/// one JSON text. JSON text is UTF-8 (RFC 8259 §8.1); `IgnoredAny` alone
/// would skip over invalid bytes inside strings, so UTF-8 is checked first.
/// The error says where, as a byte offset counted from 1, in okome's words
/// (never the parser's).
pub fn check_json(what: &'static str, value: &[u8]) -> Result<()> {
    if value.is_empty() {
        return Err(Error::Empty(what));
    }
    let bad = |detail: String| Error::InvalidJson { what, detail };
    let text = std::str::from_utf8(value).map_err(|e| {
        bad(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to().saturating_add(1)
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| bad(json_detail(text, &e)))
}

/// Where `text` stops being JSON, from the parser's line and column
/// (columns count bytes from 1).
fn json_detail(text: &str, e: &serde_json::Error) -> String {
    if e.classify() == serde_json::error::Category::Eof {
        return format!("it ends early, after byte {}", text.len());
    }
    // The byte after the (line - 1)th newline.
    let line_start = e.line().checked_sub(2).map_or(0, |newlines| {
        text.bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .nth(newlines)
            .map_or(0, |(i, _)| i.saturating_add(1))
    });
    let mut at = line_start.saturating_add(e.column()).max(1);
    if e.to_string().starts_with("control character") {
        // The parser reports some of these one byte early: the control
        // byte is the first one from there.
        at = text
            .bytes()
            .enumerate()
            .skip(at.saturating_sub(1))
            .find(|&(_, b)| b < 0x20)
            .map_or(at, |(i, _)| i.saturating_add(1));
    }
    format!("at byte {at}")
}

/// A value to store: at most `okome.max-value-bytes`, and JSON.
pub fn check_value(what: &'static str, value: &[u8], cfg: &Config) -> Result<()> {
    check_size(what, value, cfg.max_value_bytes, "max-value-bytes")?;
    check_json(what, value)
}

/// The kind of `key` if it is a cacheable okome key; else an error saying
/// that only cache keys can be `what` (locked, recorded).
pub fn cache_key_kind(key: &[u8], what: &str) -> Result<Kind> {
    let kind = keys::parse(key)?;
    if kind.cacheable() {
        Ok(kind)
    } else {
        Err(Error::BadKey(format!(
            "'{}' is a {} budget key; only cache keys (planner, model_meta, rag, tools, health) can be {what}",
            printable(key),
            kind.name()
        )))
    }
}

/// The key of an agent's budget of `kind` (its rate window, write budget
/// or ledger): `okome:budget:<kind>:{<agent>}`.
pub fn budget_key(kind: Kind, agent: &[u8]) -> Result<Vec<u8>> {
    if agent.is_empty() {
        return Err(Error::Empty("agent"));
    }
    keys::build(kind, &[agent])
}
