//! The key scheme: `okome:<kind path>:<component>:...`, with every component
//! escaped so that the mapping from tuples to keys is injective.
//!
//! Bytes in `[A-Za-z0-9._/+@=-]` are kept; every other byte (including `%`,
//! `:`, `*`, `?`, `[`, `{`, `}`, whitespace, control and non-ASCII bytes) is
//! written as `%XX` with uppercase hex. A component is never empty, so
//! splitting a key on `:` recovers its components exactly.

use crate::{Error, Result};
use sha2::{Digest, Sha256};

/// Every okome key starts with this segment.
pub const PREFIX: &str = "okome";
/// Suffix of a stampede lock key: the lock of `K` lives at `K:lock`.
pub const LOCK_SUFFIX: &[u8] = b":lock";
/// Suffix of a plan's failure record: when the leader computing planner key
/// `K` failed (`OKOME.UNLOCK ... FAILED ms`), `K:failed` holds its message
/// for `ms`, and lookups that find no plan answer `FAILED`.
pub const FAILED_SUFFIX: &[u8] = b":failed";

/// A kind of okome key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Planner,
    ModelMeta,
    Rag,
    Tools,
    Health,
    Rate,
    Write,
    /// An agent's ledger: the keys okome wrote on its behalf.
    Ledger,
    /// A subject's burst state (`OKOME.THROTTLE`'s GCRA), unnamed or named
    /// (a second component: [`named`]).
    Gcra,
    /// A subject's concurrency leases (`OKOME.LEASE.*`): only the lease
    /// commands build it, so `OKOME.KEY` does not name it ([`Kind::NAMED`]).
    Lease,
    /// A reservation record (`OKOME.TAKE ... RESERVE`): the subject of the
    /// call's first limit, then the reservation's token. Only `OKOME.TAKE`
    /// builds it (from its id, which `OKOME.SETTLE` takes), so `OKOME.KEY`
    /// does not name it ([`Kind::NAMED`]).
    Resv,
}

impl Kind {
    /// Every kind, in documentation order: [`Kind::NAMED`], then `lease`
    /// and `resv`.
    // Indices below 9 of arrays of 9 and 11: checked when compiled.
    #[allow(clippy::indexing_slicing)]
    pub const ALL: [Kind; 11] = {
        let mut all = [Kind::Resv; 11];
        let mut i = 0;
        while i < Kind::NAMED.len() {
            all[i] = Kind::NAMED[i];
            i += 1;
        }
        all[Kind::NAMED.len()] = Kind::Lease;
        all
    };

    /// The kinds `OKOME.KEY` takes by name: every kind but `lease`, whose
    /// key comes with the lease id `OKOME.LEASE.ACQUIRE` replies.
    pub const NAMED: [Kind; 9] = [
        Kind::Planner,
        Kind::ModelMeta,
        Kind::Rag,
        Kind::Tools,
        Kind::Health,
        Kind::Rate,
        Kind::Write,
        Kind::Ledger,
        Kind::Gcra,
    ];

    /// The name used in commands (`OKOME.KEY <name> ...`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Planner => "planner",
            Kind::ModelMeta => "model_meta",
            Kind::Rag => "rag",
            Kind::Tools => "tools",
            Kind::Health => "health",
            Kind::Rate => "rate",
            Kind::Write => "write",
            Kind::Ledger => "ledger",
            Kind::Gcra => "gcra",
            Kind::Lease => "lease",
            Kind::Resv => "resv",
        }
    }

    /// The segments between `okome:` and the components: a cached kind's
    /// name, or `budget:` and the budget's.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Planner | Kind::ModelMeta | Kind::Rag | Kind::Tools | Kind::Health => self.name(),
            Kind::Rate => "budget:rate",
            Kind::Write => "budget:write",
            Kind::Ledger => "budget:keys",
            Kind::Gcra => "budget:gcra",
            Kind::Lease => "budget:lease",
            Kind::Resv => "budget:resv",
        }
    }

    /// Names of the components of the key, in order. For `planner` the
    /// second component is the SHA-256 of the prompt; `OKOME.KEY planner`
    /// takes the prompt itself.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Kind::Planner => &["model", "prompt_hash", "toolset_version", "repo_hash"],
            Kind::ModelMeta => &["model"],
            Kind::Rag => &["repo", "chunk_hash"],
            Kind::Tools => &["tool_version"],
            Kind::Health => &["node"],
            Kind::Rate | Kind::Write | Kind::Ledger => &["agent"],
            Kind::Gcra | Kind::Lease | Kind::Resv => &["subject"],
        }
    }

    /// Index of the component written inside a Redis Cluster hash tag
    /// (`{...}`): the prompt hash for planner keys, the first component
    /// otherwise. A key and its lock (`key:lock`) share that tag, so they
    /// live in the same slot; so do all RAG chunks of one repo.
    pub fn tagged(self) -> usize {
        match self {
            Kind::Planner => 1,
            _ => 0,
        }
    }

    /// Whether values of this kind are cached data (and so may be locked).
    /// Every kind is cached data, a budget ([`Kind::is_budget`]) or an
    /// agent's ledger.
    pub fn cacheable(self) -> bool {
        match self {
            Kind::Planner | Kind::ModelMeta | Kind::Rag | Kind::Tools | Kind::Health => true,
            Kind::Rate | Kind::Write | Kind::Ledger | Kind::Gcra | Kind::Lease | Kind::Resv => {
                false
            }
        }
    }

    /// Whether values of this kind are budgets: windows charged by the
    /// limiter (`OKOME.RATE`, `OKOME.WBUDGET`, an `AGENT` option), GCRA
    /// states (`OKOME.THROTTLE`), or a subject's concurrency leases. An
    /// agent's ledger lives under `okome:budget:` too, but is not a budget.
    pub fn is_budget(self) -> bool {
        match self {
            Kind::Rate | Kind::Write | Kind::Gcra | Kind::Lease | Kind::Resv => true,
            Kind::Planner
            | Kind::ModelMeta
            | Kind::Rag
            | Kind::Tools
            | Kind::Health
            | Kind::Ledger => false,
        }
    }

    /// The kind whose prefix `key` starts with (`okome:<path>:`), the rest
    /// unchecked: tells okome's keys apart where they are only named (an
    /// eviction, a charge of a key okome built). [`parse`] validates a key.
    pub fn of(key: &[u8]) -> Option<Kind> {
        let rest = key.strip_prefix(PREFIX.as_bytes())?.strip_prefix(b":")?;
        Kind::ALL.into_iter().find(|k| {
            rest.strip_prefix(k.path().as_bytes())
                .is_some_and(|r| r.starts_with(b":"))
        })
    }

    /// The refusal of `name`, which names no kind: lists every kind.
    pub fn unknown(name: &[u8]) -> Error {
        let names = Kind::NAMED.map(Kind::name);
        let known = match names.split_last() {
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Error::UnknownKind {
            kind: printable(name),
            known,
        }
    }

    /// The kind named `name` (case-insensitive) among [`Kind::NAMED`], if
    /// any: each command says which kinds it takes ([`Error::NotCacheable`]
    /// for `OKOME.CACHE.*`, [`Error::UnknownKind`] for `OKOME.KEY`).
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        Kind::NAMED
            .into_iter()
            .find(|k| k.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// The error for `got` parts given to a kind that takes
/// `kind.components()`: `kind 'rag' takes 2 parts (repo, chunk_hash), got 1`.
pub fn wrong_parts(kind: Kind, got: usize) -> Error {
    let names = kind.components();
    Error::Syntax(format!(
        "kind '{}' takes {} ({}), got {got}",
        kind.name(),
        parts(names.len()),
        names.join(", "),
    ))
}

/// `1 part`, `2 parts`.
pub fn parts(n: usize) -> String {
    counted(n, "part")
}

/// `n` `noun`s: `1 component`, `2 components`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Whether `b` is kept as is in a key component.
pub fn is_safe(b: u8) -> bool {
    SAFE.get(usize::from(b)).copied().unwrap_or(false)
}

const fn safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'@' | b'=' | b'-')
}

/// [`is_safe`] for every byte: one load per byte on the hot path.
// `b as usize` < 256: the index is always in bounds.
#[allow(clippy::indexing_slicing)]
static SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0u8;
    loop {
        t[b as usize] = safe_byte(b);
        if b == u8::MAX {
            break;
        }
        b += 1;
    }
    t
};

/// The uppercase hex digit of a nibble (`n < 16`).
fn hex_digit(n: u8) -> u8 {
    match n {
        0..=9 => b'0'.wrapping_add(n),
        _ => b'A'.wrapping_add(n.wrapping_sub(10)),
    }
}

/// Appends the escaped form of `component` to `out`.
pub fn escape_into(out: &mut Vec<u8>, component: &[u8]) {
    // Copy runs of safe bytes at once, then the escaped byte that ends
    // each run. Most components (model names, hashes, agent ids) are one
    // run.
    let mut rest = component;
    while let Some(i) = rest.iter().position(|&b| !is_safe(b)) {
        let (run, tail) = rest.split_at(i);
        out.extend_from_slice(run);
        if let Some((&b, tail)) = tail.split_first() {
            out.extend_from_slice(&[b'%', hex_digit(b >> 4), hex_digit(b & 0x0f)]);
            rest = tail;
        } else {
            rest = tail;
        }
    }
    out.extend_from_slice(rest);
}

/// The escaped form of `component`.
pub fn escape(component: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(component.len());
    escape_into(&mut out, component);
    out
}

fn upper_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// Decodes a canonical escaped component: the inverse of [`escape`]. Returns
/// `None` for anything [`escape`] cannot produce (an empty component, a byte
/// that should have been escaped, lowercase or truncated `%XX`, or an escaped
/// byte that did not need escaping).
pub fn unescape(segment: &[u8]) -> Option<Vec<u8>> {
    if segment.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(segment.len());
    let mut rest = segment;
    while let Some((&b, tail)) = rest.split_first() {
        if is_safe(b) {
            out.push(b);
            rest = tail;
        } else if b == b'%' {
            let (hi, lo, tail) = match tail {
                [hi, lo, tail @ ..] => (*hi, *lo, tail),
                _ => return None,
            };
            let v = (upper_hex_value(hi)? << 4) | upper_hex_value(lo)?;
            if is_safe(v) {
                return None;
            }
            out.push(v);
            rest = tail;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Lowercase hex SHA-256 of the prompt's bytes.
pub fn prompt_hash(prompt: &[u8]) -> String {
    LAST_HASH.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return hex::encode(Sha256::digest(prompt));
        };
        if let Some((p, h)) = last.as_ref() {
            if p.as_slice() == prompt {
                return h.clone();
            }
        }
        let h = hex::encode(Sha256::digest(prompt));
        if prompt.len() <= MEMO_MAX_PROMPT {
            *last = Some((prompt.to_vec(), h.clone()));
        }
        h
    })
}

/// Prompts up to this size are remembered with their hash.
const MEMO_MAX_PROMPT: usize = 1 << 20;

thread_local! {
    /// The last prompt hashed and its hash: a call's keys are derived once
    /// by okome's command filter and again by the command, from the same
    /// prompt, so it is hashed once (comparing bytes costs a fraction of
    /// hashing them).
    static LAST_HASH: std::cell::RefCell<Option<(Vec<u8>, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Builds the key of `kind` from its components, in the order of
/// [`Kind::components`]. Every component must be non-empty.
pub fn build(kind: Kind, parts: &[&[u8]]) -> Result<Vec<u8>> {
    let names = kind.components();
    if parts.len() != names.len() {
        return Err(wrong_parts(kind, parts.len()));
    }
    // prefix, ':', path, then ':' and the part for each, the tag's braces,
    // and room for a few escapes (ids like `agent:42` escape their ':').
    let cap = parts.iter().fold(
        PREFIX
            .len()
            .saturating_add(kind.path().len())
            .saturating_add(3 + 16),
        |acc, p| acc.saturating_add(p.len()).saturating_add(1),
    );
    let mut key = Vec::with_capacity(cap);
    key.extend_from_slice(PREFIX.as_bytes());
    key.push(b':');
    key.extend_from_slice(kind.path().as_bytes());
    for (i, (part, name)) in parts.iter().zip(names).enumerate() {
        if part.is_empty() {
            return Err(Error::Empty(name));
        }
        key.push(b':');
        let tagged = i == kind.tagged();
        if tagged {
            key.push(b'{');
        }
        escape_into(&mut key, part);
        if tagged {
            key.push(b'}');
        }
    }
    Ok(key)
}

/// The key of `subject`'s budget of `kind` under `name`:
/// `okome:<path>:{<subject>}:<name>`, or `okome:<path>:{<subject>}` for no
/// name or the name `default`. Both components are escaped and must not be
/// empty.
pub fn named(kind: Kind, subject: &[u8], name: Option<&[u8]>) -> Result<Vec<u8>> {
    let mut key = build(kind, &[subject])?;
    match name {
        None | Some(DEFAULT_NAME) => {}
        Some(b"") => return Err(Error::Empty("name")),
        Some(name) => {
            key.push(b':');
            escape_into(&mut key, name);
        }
    }
    Ok(key)
}

/// The name of a subject's unnamed rate window (`NAME default` is
/// `okome:budget:rate:{<subject>}`, OKOME.RATE's window without `NAME`).
pub const DEFAULT_NAME: &[u8] = b"default";
/// A name no rate window takes: `okome:budget:rate:{<subject>}:lock` would
/// read as the stampede lock of the subject's default window.
const RESERVED_NAME: &[u8] = b"lock";

/// The key of `subject`'s rate window named `name`:
/// `okome:budget:rate:{<subject>}:<name>`, the name escaped like a
/// component; `None` or `default` is `okome:budget:rate:{<subject>}`.
/// Both must be non-empty, and `lock` is refused.
pub fn rate_key(subject: &[u8], name: Option<&[u8]>) -> Result<Vec<u8>> {
    if subject.is_empty() {
        return Err(Error::Empty("agent"));
    }
    if name == Some(RESERVED_NAME) {
        return Err(Error::Syntax(
            "NAME lock is reserved (okome:budget:rate:{<subject>}:lock would read as a \
             stampede lock); pick another name"
                .into(),
        ));
    }
    named(Kind::Rate, subject, name)
}

/// Whether `seg`, the segment after a rate key's tag, is a window's name as
/// [`rate_key`] writes it: canonically escaped, neither `default` (that
/// window has no name segment) nor `lock`.
fn is_window_name(seg: &[u8]) -> bool {
    seg != DEFAULT_NAME && seg != RESERVED_NAME && unescape(seg).is_some()
}

/// Drops the name of a named rate window (`...:{<subject>}:<name>`) from a
/// key's segments, checked: why it is not a window's name otherwise.
fn strip_window_name(
    kind: Kind,
    segments: &mut Vec<&[u8]>,
) -> std::result::Result<(), &'static str> {
    if kind == Kind::Rate && segments.len() == 2 {
        if !segments.last().is_some_and(|n| is_window_name(n)) {
            return Err(
                "a rate window's name must be canonically escaped, and neither 'default' nor 'lock'",
            );
        }
        segments.truncate(1);
    }
    Ok(())
}

/// Length of a prompt hash: the SHA-256 in lowercase hex.
pub const PROMPT_HASH_LEN: usize = 64;

/// Checks a prompt hash sent by the client (`HASHED`): exactly 64
/// lowercase hex digits. The error names the argument and shows (the start
/// of) what was sent.
pub fn check_prompt_hash(hash: &[u8]) -> Result<()> {
    // A lowercase hex digit, bit by bit: '0'-'9' is 0x30-0x39, 'a'-'f'
    // 0x61-0x66. Folded over the whole hash, with no early exit.
    let hex = |b: u8| (b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6);
    if hash.len() == PROMPT_HASH_LEN && hash.iter().fold(true, |ok, &b| ok & hex(b)) {
        return Ok(());
    }
    const SHOWN: usize = 72;
    let mut shown = printable(hash.get(..SHOWN).unwrap_or(hash));
    if hash.len() > SHOWN {
        shown.push_str("...");
    }
    Err(Error::NotPromptHash {
        got: shown,
        len: hash.len(),
    })
}

/// The planner key for a prompt hashed by the client (`HASHED`): checks
/// the hash, then [`build`]s. Nothing is hashed here.
pub fn planner_key_hashed(
    model: &[u8],
    prompt_hash: &[u8],
    toolset: &[u8],
    repo_hash: &[u8],
) -> Result<Vec<u8>> {
    check_prompt_hash(prompt_hash)?;
    // `build`, with the hash (checked: hex digits only) copied as it is.
    let parts = [
        (model, "model"),
        (toolset, "toolset_version"),
        (repo_hash, "repo_hash"),
    ];
    if let Some((_, name)) = parts.iter().find(|(p, _)| p.is_empty()) {
        return Err(Error::Empty(name));
    }
    let cap = parts
        .iter()
        .fold(PROMPT_HASH_LEN.saturating_add(32), |acc, (p, _)| {
            acc.saturating_add(p.len())
        });
    let mut key = Vec::with_capacity(cap);
    key.extend_from_slice(b"okome:planner:");
    escape_into(&mut key, model);
    key.extend_from_slice(b":{");
    key.extend_from_slice(prompt_hash);
    key.extend_from_slice(b"}:");
    escape_into(&mut key, toolset);
    key.push(b':');
    escape_into(&mut key, repo_hash);
    Ok(key)
}

/// The planner key for a prompt: hashes the prompt, then [`build`]s.
pub fn planner_key(
    model: &[u8],
    prompt: &[u8],
    toolset: &[u8],
    repo_hash: &[u8],
) -> Result<Vec<u8>> {
    if prompt.is_empty() {
        return Err(Error::Empty("prompt"));
    }
    let hash = prompt_hash(prompt);
    build(Kind::Planner, &[model, hash.as_bytes(), toolset, repo_hash])
}

/// The lock key protecting `key`.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    suffixed(key, LOCK_SUFFIX)
}

/// The failure record of planner key `key` ([`FAILED_SUFFIX`]).
pub fn failed_key(key: &[u8]) -> Vec<u8> {
    suffixed(key, FAILED_SUFFIX)
}

fn suffixed(key: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len().saturating_add(suffix.len()));
    out.extend_from_slice(key);
    out.extend_from_slice(suffix);
    out
}

/// CRC16/XMODEM, as Redis Cluster uses for key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster hash slot of `key` (0..16384): CRC16 of the first
/// non-empty `{...}` tag, or of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let after = key.get(open.saturating_add(1)..)?;
            let close = after.iter().position(|&b| b == b'}')?;
            let tag = after.get(..close)?;
            (!tag.is_empty()).then_some(tag)
        })
        .unwrap_or(key);
    crc16(hashed) & 0x3fff
}

/// Validates that `key` is exactly a key [`build`] produces, and returns its
/// kind. Lock keys (`...:lock`) are not okome data keys and are refused.
pub fn parse(key: &[u8]) -> Result<Kind> {
    let bad = |why: &str| Error::BadKey(format!("'{}' is not an okome key: {why}", printable(key)));
    let rest = key
        .strip_prefix(PREFIX.as_bytes())
        .and_then(|r| r.strip_prefix(b":"))
        .ok_or_else(|| bad("it must start with 'okome:'"))?;
    let (kind, comps) = Kind::ALL
        .into_iter()
        .find_map(|k| {
            let comps = rest.strip_prefix(k.path().as_bytes())?.strip_prefix(b":")?;
            Some((k, comps))
        })
        .ok_or_else(|| {
            bad("unknown kind (planner, model_meta, rag, tools, health, budget:rate, budget:write, budget:keys, budget:gcra)")
        })?;
    let mut segments: Vec<&[u8]> = comps.split(|&b| b == b':').collect();
    let names = kind.components();
    strip_window_name(kind, &mut segments).map_err(bad)?;
    // A GCRA state ([`named`]) or a lease pool may carry a name after its
    // subject: `okome:budget:lease:{<subject>}:<name>`.
    let names: &[&str] = match kind {
        Kind::Gcra | Kind::Lease if segments.len() == 2 => &["subject", "name"],
        Kind::Resv if segments.len() == 2 => &["subject", "token"],
        _ => names,
    };
    if segments.len() != names.len() {
        return Err(bad(&format!(
            "kind '{}' has {} ({}), found {}",
            kind.name(),
            counted(names.len(), "component"),
            names.join(", "),
            segments.len()
        )));
    }
    let mut tag: &[u8] = &[];
    for (i, (seg, name)) in segments.iter().zip(names).enumerate() {
        let seg = if i == kind.tagged() {
            let inner = seg
                .strip_prefix(b"{")
                .and_then(|s| s.strip_suffix(b"}"))
                .ok_or_else(|| bad(&format!("component {name} must be a hash tag {{...}}")))?;
            tag = inner;
            inner
        } else {
            seg
        };
        if unescape(seg).is_none() {
            return Err(bad(&format!(
                "component {name} is empty or not canonically escaped"
            )));
        }
    }
    if kind == Kind::Planner {
        let hash = tag;
        if hash.len() != 64 || !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("prompt_hash must be 64 lowercase hex digits (SHA-256)"));
        }
    }
    Ok(kind)
}

/// Parses `key` and checks that it is of kind `want`.
pub fn parse_kind(key: &[u8], want: Kind) -> Result<()> {
    let kind = parse(key)?;
    if kind == want {
        Ok(())
    } else {
        Err(Error::BadKey(format!(
            "'{}' is a {} key, not a {} key",
            printable(key),
            kind.name(),
            want.name()
        )))
    }
}

/// A short, printable rendering of user bytes for error messages: at most
/// 100 bytes, with non-printable bytes as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 100;
    let mut s = String::new();
    for &b in bytes.iter().take(MAX) {
        if (0x20..0x7f).contains(&b) && b != b'\'' && b != b'\\' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_hashed_planner_key_is_the_built_one(
            model in proptest::collection::vec(any::<u8>(), 0..12),
            prompt in proptest::collection::vec(any::<u8>(), 1..40),
            toolset in proptest::collection::vec(any::<u8>(), 0..12),
            repo in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let hash = prompt_hash(&prompt);
            prop_assert_eq!(
                planner_key_hashed(&model, hash.as_bytes(), &toolset, &repo),
                build(Kind::Planner, &[&model, hash.as_bytes(), &toolset, &repo])
            );
            prop_assert_eq!(
                planner_key_hashed(&model, hash.as_bytes(), &toolset, &repo),
                planner_key(&model, &prompt, &toolset, &repo)
            );
        }
    }

    #[test]
    fn ollama_model_names_are_escaped() {
        let key = planner_key(b"llama3:8b", b"hello", b"v1.2.3", b"abc123").unwrap();
        let expect = format!(
            "okome:planner:llama3%3A8b:{{{}}}:v1.2.3:abc123",
            prompt_hash(b"hello")
        );
        assert_eq!(key, expect.as_bytes());
    }

    #[test]
    fn prompt_hash_is_lowercase_sha256() {
        assert_eq!(
            prompt_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn dangerous_bytes_never_reach_a_segment() {
        let e = escape(b"a:b*c?d[e]f{g}h i\nj\0k%l\xff");
        for bad in [
            b':', b'*', b'?', b'[', b']', b'{', b'}', b' ', b'\n', 0, 0xff,
        ] {
            assert!(!e.contains(&bad), "{bad:#x} in {}", printable(&e));
        }
        assert_eq!(e, b"a%3Ab%2Ac%3Fd%5Be%5Df%7Bg%7Dh%20i%0Aj%00k%25l%FF");
    }

    #[test]
    fn empty_components_are_refused() {
        assert_eq!(build(Kind::ModelMeta, &[b""]), Err(Error::Empty("model")));
        assert_eq!(
            planner_key(b"m", b"p", b"t", b""),
            Err(Error::Empty("repo_hash"))
        );
        assert_eq!(
            planner_key(b"m", b"", b"t", b"r"),
            Err(Error::Empty("prompt"))
        );
        assert_eq!(
            build(Kind::Rag, &[b"x"]).unwrap_err().to_string(),
            "ERR syntax error: kind 'rag' takes 2 parts (repo, chunk_hash), got 1"
        );
        assert_eq!(
            build(Kind::Tools, &[b"x", b"y"]).unwrap_err().to_string(),
            "ERR syntax error: kind 'tools' takes 1 part (tool_version), got 2"
        );
    }

    #[test]
    fn every_kind_has_its_seed_key() {
        assert_eq!(
            build(Kind::ModelMeta, &[b"gpt-4"]).unwrap(),
            b"okome:model_meta:{gpt-4}"
        );
        assert_eq!(build(Kind::Rag, &[b"r", b"c"]).unwrap(), b"okome:rag:{r}:c");
        assert_eq!(build(Kind::Tools, &[b"7"]).unwrap(), b"okome:tools:{7}");
        assert_eq!(build(Kind::Health, &[b"n1"]).unwrap(), b"okome:health:{n1}");
        assert_eq!(
            build(Kind::Rate, &[b"a"]).unwrap(),
            b"okome:budget:rate:{a}"
        );
        assert_eq!(
            build(Kind::Write, &[b"a"]).unwrap(),
            b"okome:budget:write:{a}"
        );
        assert_eq!(
            build(Kind::Ledger, &[b"a:b"]).unwrap(),
            b"okome:budget:keys:{a%3Ab}"
        );
        assert_eq!(parse(b"okome:budget:keys:{a}"), Ok(Kind::Ledger));
        assert_eq!(
            build(Kind::Gcra, &[b"ip:1"]).unwrap(),
            b"okome:budget:gcra:{ip%3A1}"
        );
        assert_eq!(
            named(Kind::Gcra, b"ip", Some(b"login:form")).unwrap(),
            b"okome:budget:gcra:{ip}:login%3Aform"
        );
        assert_eq!(
            named(Kind::Gcra, b"ip", Some(b"default")),
            build(Kind::Gcra, &[b"ip"])
        );
        assert_eq!(named(Kind::Gcra, b"ip", None), build(Kind::Gcra, &[b"ip"]));
        assert_eq!(
            named(Kind::Gcra, b"ip", Some(b"")),
            Err(Error::Empty("name"))
        );
        assert_eq!(named(Kind::Gcra, b"", None), Err(Error::Empty("subject")));
        assert_eq!(
            Kind::of(b"okome:budget:gcra:{ip}:login%3Aform"),
            Some(Kind::Gcra)
        );
        assert_eq!(
            parse(b"okome:budget:gcra:{ip}:login%3Aform"),
            Ok(Kind::Gcra)
        );
        assert_eq!(parse(b"okome:budget:gcra:{ip}"), Ok(Kind::Gcra));
        assert!(parse(b"okome:budget:gcra:{ip}:a:b").is_err());
        assert!(parse(b"okome:budget:gcra:{ip}:a b").is_err());
        // A rate window may be named too (OKOME.RATE ... NAME).
        assert_eq!(parse(b"okome:budget:rate:{ip}:a"), Ok(Kind::Rate));
        assert!(!Kind::Ledger.cacheable());
    }

    #[test]
    fn every_kind_is_cached_data_a_budget_or_the_ledger() {
        for k in Kind::ALL {
            let roles = [k.cacheable(), k.is_budget(), k == Kind::Ledger];
            assert_eq!(roles.iter().filter(|&&r| r).count(), 1, "{k:?}");
        }
        assert!(Kind::Rate.is_budget() && Kind::Write.is_budget() && Kind::Gcra.is_budget());
    }

    #[test]
    fn of_names_the_kind_of_a_built_key() {
        for k in Kind::ALL {
            let parts = vec![&b"a"[..]; k.components().len()];
            let key = build(k, &parts).unwrap();
            assert_eq!(Kind::of(&key), Some(k), "{}", printable(&key));
            assert_eq!(Kind::of(&lock_key(&key)), Some(k));
        }
        for other in [
            &b"okome:budget:rate"[..],
            b"okome:budget:ratex:{a}",
            b"okome:budget:{a}",
            b"okome:ragx:{a}",
            b"other:rag:{a}",
            b"okome:",
            b"",
        ] {
            assert_eq!(Kind::of(other), None, "{}", printable(other));
        }
    }

    #[test]
    fn named_rate_windows_are_rate_keys() {
        let k = |s: &[u8], n: Option<&[u8]>| rate_key(s, n);
        assert_eq!(k(b"a", None).unwrap(), b"okome:budget:rate:{a}");
        assert_eq!(k(b"a", Some(b"default")).unwrap(), b"okome:budget:rate:{a}");
        assert_eq!(k(b"a", Some(b"tpm")).unwrap(), b"okome:budget:rate:{a}:tpm");
        assert_eq!(
            k(b"gpt:4o", Some(b"tokens per:min")).unwrap(),
            b"okome:budget:rate:{gpt%3A4o}:tokens%20per%3Amin"
        );
        // `Default` is another name: names are bytes, as subjects are.
        assert_eq!(
            k(b"a", Some(b"Default")).unwrap(),
            b"okome:budget:rate:{a}:Default"
        );
        assert_eq!(k(b"a", Some(b"")), Err(Error::Empty("name")));
        assert_eq!(k(b"", Some(b"x")), Err(Error::Empty("agent")));
        assert_eq!(
            k(b"a", Some(b"lock")).unwrap_err().to_string(),
            "ERR syntax error: NAME lock is reserved (okome:budget:rate:{<subject>}:lock would \
             read as a stampede lock); pick another name"
        );
        for name in [&b"tpm"[..], b"a:b", b"\x00", b"default2", b"LOCK"] {
            let key = k(b"s{1}", Some(name)).unwrap();
            assert_eq!(parse(&key), Ok(Kind::Rate), "{}", printable(&key));
            assert_eq!(Kind::of(&key), Some(Kind::Rate));
            assert_eq!(
                slot(&key),
                slot(&k(b"s{1}", None).unwrap()),
                "one slot per subject"
            );
        }
        let names = ["default", "lock", "", "a b", "%41", "x:y"];
        let other_kinds = ["write:{a}:x", "keys:{a}:x"];
        let bad = names.map(|n| format!("rate:{{a}}:{n}"));
        for key in bad.iter().map(String::as_str).chain(other_kinds) {
            let key = format!("okome:budget:{key}");
            assert!(parse(key.as_bytes()).is_err(), "{key}");
        }
    }

    #[test]
    fn parse_accepts_built_keys_and_refuses_others() {
        let k = planner_key(b"m", b"p", b"t", b"r").unwrap();
        assert_eq!(parse(&k), Ok(Kind::Planner));
        assert!(parse(&lock_key(&k)).is_err());
        for bad in [
            &b"okome:planner:m:abc:t:r"[..],
            b"okome:planner",
            b"okome:model_meta:",
            b"okome:model_meta:a%3a",
            b"okome:model_meta:%41",
            b"okome:model_meta:a b",
            b"okome:model_meta:a:b",
            b"okome:nope:a",
            b"other:model_meta:a",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", printable(bad));
        }
        assert_eq!(parse(b"okome:model_meta:{a%3A}"), Ok(Kind::ModelMeta));
        assert!(parse_kind(b"okome:tools:{1}", Kind::Planner).is_err());
    }

    #[test]
    fn slots_follow_redis_cluster() {
        // CLUSTER KEYSLOT values from Redis.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        // A key and its lock share a slot, for every kind.
        for k in [
            planner_key(b"llama3:8b", b"p", b"t", b"r").unwrap(),
            build(Kind::ModelMeta, &[b"m{x}"]).unwrap(),
            build(Kind::Rag, &[b"r", b"c"]).unwrap(),
            build(Kind::Health, &[b"n"]).unwrap(),
        ] {
            assert_eq!(slot(&k), slot(&lock_key(&k)));
        }
        // The tag is the escaped component: an id of safe bytes routes as
        // itself.
        assert_eq!(
            slot(&build(Kind::Rate, &[b"agent-123"]).unwrap()),
            slot(b"agent-123")
        );
    }

    #[test]
    fn kind_names_and_the_hard_rule() {
        assert_eq!(Kind::from_name(b"RAG"), Some(Kind::Rag));
        assert_eq!(Kind::from_name(b"budget:rate"), None);
        assert_eq!(Kind::from_name(b"git"), None);
        let e = Error::NotCacheable("git".into()).to_string();
        assert!(e.starts_with("ERR kind 'git' is not cacheable"), "{e}");
        assert!(e.contains("git operations"));
        assert_eq!(
            Kind::unknown(b"lock").to_string(),
            "ERR kind 'lock' is not a kind of okome key: OKOME.KEY takes planner, model_meta, \
             rag, tools, health, rate, write, ledger or gcra"
        );
    }

    proptest! {
        #[test]
        fn escape_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            let e = escape(&bytes);
            prop_assert!(e.iter().all(|&b| is_safe(b) || b == b'%'));
            prop_assert_eq!(unescape(&e), Some(bytes));
        }

        #[test]
        fn keys_are_injective(
            a in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..8), 2),
            b in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..8), 2),
        ) {
            let ka = build(Kind::Rag, &[&a[0], &a[1]]).unwrap();
            let kb = build(Kind::Rag, &[&b[0], &b[1]]).unwrap();
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(parse(&ka), Ok(Kind::Rag));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&bytes);
        }
    }
}
