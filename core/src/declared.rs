//! Declared keys: every key a call touches, named in its arguments so that
//! Redis sees it, as a Lua script names its keys in `KEYS`.
//!
//! The user calls `OKOME.RATE agent 10 60`; okome's command filter appends
//! the keys that call will touch, grouped by what it does to them:
//!
//! ```text
//! OKOME.RATE agent 10 60 OKOME.R 0 OKOME.W 0 OKOME.RW 1 okome:budget:rate:{agent}
//! ```
//!
//! - `OKOME.R n key...`: read, never written (as `GET`);
//! - `OKOME.W n key...`: written, its value never returned (as `SET`);
//! - `OKOME.RW n key...`: read and written (as `INCR`).
//!
//! Redis's ACL (selectors, `%R~`/`%W~`), cluster redirection (`MOVED`,
//! `ASK`, `TRYAGAIN`, `CROSSSLOT`) and client tracking then reason about the
//! real keys, before okome runs. The command checks that the tail is
//! exactly what its own arguments derive (see [`Tail::matches`]), so a
//! tail a client wrote itself can only add keys to Redis's checks, never
//! hide one.

use crate::keys::{failed_key, lock_key};

/// What a call does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    /// The three groups, in the order the tail lists them.
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::ReadWrite];

    /// The keyword that opens this group in the tail.
    pub const fn keyword(self) -> &'static str {
        match self {
            Access::Read => "OKOME.R",
            Access::Write => "OKOME.W",
            Access::ReadWrite => "OKOME.RW",
        }
    }

    fn index(self) -> usize {
        match self {
            Access::Read => 0,
            Access::Write => 1,
            Access::ReadWrite => 2,
        }
    }
}

/// The keys one call touches, by access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    groups: [Vec<Vec<u8>>; 3],
}

impl Declared {
    /// Nothing declared.
    pub fn none() -> Declared {
        Declared::default()
    }

    /// Adds `key` with `access`.
    pub fn with(mut self, access: Access, key: Vec<u8>) -> Declared {
        if let Some(g) = self.groups.get_mut(access.index()) {
            g.push(key);
        }
        self
    }

    /// Adds `key` with `access` if `key` is some.
    pub fn with_opt(self, access: Access, key: Option<Vec<u8>>) -> Declared {
        match key {
            Some(k) => self.with(access, k),
            None => self,
        }
    }

    /// The keys of one group.
    pub fn group(&self, access: Access) -> &[Vec<u8>] {
        self.groups
            .get(access.index())
            .map_or(&[], |g| g.as_slice())
    }

    /// Every declared key with its access.
    pub fn iter(&self) -> impl Iterator<Item = (Access, &[u8])> {
        Access::ALL
            .into_iter()
            .flat_map(move |a| self.group(a).iter().map(move |k| (a, k.as_slice())))
    }

    /// The arguments the filter appends, in order: every group, empty
    /// ones included, so the tail always ends the arguments and is found
    /// from the end.
    pub fn parts(&self) -> impl Iterator<Item = Part<'_>> {
        Access::ALL.into_iter().flat_map(move |a| {
            let keys = self.group(a);
            [Part::Keyword(a), Part::Count(keys.len())]
                .into_iter()
                .chain(keys.iter().map(|k| Part::Key(k)))
        })
    }

    /// [`Declared::parts`] as bytes.
    pub fn tail(&self) -> Vec<Vec<u8>> {
        self.parts().map(|p| p.bytes()).collect()
    }
}

/// One argument of a tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    /// The keyword opening a group.
    Keyword(Access),
    /// How many keys the group has.
    Count(usize),
    Key(&'a [u8]),
}

impl Part<'_> {
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Part::Keyword(a) => a.keyword().as_bytes().to_vec(),
            Part::Count(n) => n.to_string().into_bytes(),
            Part::Key(k) => k.to_vec(),
        }
    }
}

/// A tail found at the end of a call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail<'a> {
    /// Where the tail starts: the arguments before it are the user's.
    pub start: usize,
    groups: [&'a [&'a [u8]]; 3],
    /// Index (in the arguments) of each group's first key.
    firsts: [usize; 3],
}

impl<'a> Tail<'a> {
    /// Finds the tail ending `args`: the last `OKOME.R`, then the three
    /// groups, which must end exactly at the last argument.
    pub fn find(args: &'a [&'a [u8]]) -> Option<Tail<'a>> {
        let start = args
            .iter()
            .rposition(|a| *a == Access::Read.keyword().as_bytes())?;
        let mut at = start;
        let mut groups: [&'a [&'a [u8]]; 3] = [&[]; 3];
        let mut firsts = [0usize; 3];
        for a in Access::ALL {
            if args.get(at).copied() != Some(a.keyword().as_bytes()) {
                return None;
            }
            let n = count(args.get(at.checked_add(1)?)?)?;
            let first = at.checked_add(2)?;
            let end = first.checked_add(n)?;
            let keys = args.get(first..end)?;
            let i = a.index();
            *groups.get_mut(i)? = keys;
            *firsts.get_mut(i)? = first;
            at = end;
        }
        (at == args.len()).then_some(Tail {
            start,
            groups,
            firsts,
        })
    }

    /// The arguments before the tail.
    pub fn user(&self, args: &'a [&'a [u8]]) -> &'a [&'a [u8]] {
        args.get(..self.start).unwrap_or_default()
    }

    /// Every key with its access and its index in the arguments.
    pub fn positions(&self) -> impl Iterator<Item = (usize, Access)> + '_ {
        Access::ALL.into_iter().flat_map(move |a| {
            let i = a.index();
            let first = self.firsts.get(i).copied().unwrap_or(0);
            let n = self.groups.get(i).map_or(0, |g| g.len());
            (first..first.saturating_add(n)).map(move |p| (p, a))
        })
    }

    /// Whether the tail declares exactly `d`, group by group, in order.
    pub fn matches(&self, d: &Declared) -> bool {
        Access::ALL.into_iter().all(|a| {
            let mine = self.groups.get(a.index()).copied().unwrap_or_default();
            let theirs = d.group(a);
            mine.len() == theirs.len() && mine.iter().zip(theirs).all(|(x, y)| *x == y.as_slice())
        })
    }
}

/// A group's key count: a plain decimal number, at most 4 digits.
fn count(arg: &[u8]) -> Option<usize> {
    if arg.is_empty() || arg.len() > 4 || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// A plan lookup of `key`: the plan and its failure record (read) and, if
/// the lookup may take the lock (not `NOLOCK`), its lock (written). What a
/// follower woken from `WAIT` touches too.
pub fn lookup(key: &[u8], locks: bool) -> Declared {
    Declared::none()
        .with(Access::Read, key.to_vec())
        .with(Access::Read, failed_key(key))
        .with_opt(Access::Write, locks.then(|| lock_key(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|a| a.as_slice()).collect()
    }

    #[test]
    fn a_tail_round_trips_and_ends_the_arguments() {
        let d = Declared::none()
            .with(Access::Read, b"okome:planner:m:{h}:t:r".to_vec())
            .with(Access::Write, b"okome:planner:m:{h}:t:r:lock".to_vec())
            .with(Access::ReadWrite, b"okome:budget:rate:{a}".to_vec());
        let mut all: Vec<Vec<u8>> = vec![b"m".to_vec(), b"OKOME.R".to_vec()];
        all.extend(d.tail());
        let args = argv(&all);
        let t = Tail::find(&args).unwrap();
        assert_eq!(
            t.start, 2,
            "a user argument equal to the keyword stays the user's"
        );
        assert_eq!(t.user(&args).len(), 2);
        assert!(t.matches(&d));
        let pos: Vec<_> = t.positions().collect();
        assert_eq!(
            pos,
            vec![
                (4, Access::Read),
                (7, Access::Write),
                (10, Access::ReadWrite)
            ]
        );
        assert!(!t.matches(&Declared::none()));
    }

    #[test]
    fn no_tail_or_a_broken_one_is_none() {
        for bad in [
            vec!["a", "b"],
            vec!["OKOME.R", "0", "OKOME.W", "0"],
            vec!["OKOME.R", "0", "OKOME.W", "0", "OKOME.RW", "1"],
            vec!["OKOME.R", "0", "OKOME.W", "0", "OKOME.RW", "0", "extra"],
            vec!["OKOME.R", "x", "OKOME.W", "0", "OKOME.RW", "0"],
            vec!["OKOME.R", "-1", "OKOME.W", "0", "OKOME.RW", "0"],
            vec!["OKOME.R", "99999", "OKOME.W", "0", "OKOME.RW", "0"],
        ] {
            let args: Vec<&[u8]> = bad.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(Tail::find(&args), None, "{bad:?}");
        }
    }
}
