//! A small RAII wrapper over the low-level key API, working on byte slices,
//! plus the clock, random tokens and effect replication.
//!
//! Keys written through the low-level API are not propagated by Redis, so
//! every write method of [`Key`] also replicates its effect, with absolute
//! times: `SET key value PXAT t`, `PEXPIREAT key t`, `DEL key`, or
//! `SETRANGE key offset bytes` + `PEXPIREAT key t` (a window's tail).

use okome_core::keys::printable;
use okome_core::Error;
use redis_module::{raw, Context};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The notification of a new expiry (`expire`, a generic event).
const EXPIRE_EVENT: (i32, &CStr) = (raw::REDISMODULE_NOTIFY_GENERIC, c"expire");

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    Nothing,
    String,
    Other,
}

/// A new string owned by the caller (no context: freed with
/// `RedisModule_FreeString(NULL, s)` or handed to Redis), or null.
pub fn new_string(bytes: &[u8]) -> *mut raw::RedisModuleString {
    create_string(ptr::null_mut(), bytes)
}

fn create_string(ctx: *mut raw::RedisModuleCtx, bytes: &[u8]) -> *mut raw::RedisModuleString {
    // SAFETY: the API is initialised at load time; ptr/len describe `bytes`.
    // A NULL context is allowed: the string is then not auto-memory managed.
    unsafe {
        match raw::RedisModule_CreateString {
            Some(f) => f(ctx, bytes.as_ptr().cast::<c_char>(), bytes.len()),
            None => ptr::null_mut(),
        }
    }
}

fn free_string(ctx: *mut raw::RedisModuleCtx, s: *mut raw::RedisModuleString) {
    if s.is_null() {
        return;
    }
    // SAFETY: `s` was created by `create_string` with the same context.
    unsafe {
        if let Some(f) = raw::RedisModule_FreeString {
            f(ctx, s);
        }
    }
}

/// A key name as a Redis string, made once from bytes and freed on drop:
/// used for the ACL check, to open the key and to replicate its writes.
/// Made without a context, so it is tied to none (and freed without one).
pub struct Name {
    ptr: *mut raw::RedisModuleString,
}

impl Name {
    pub fn new(bytes: &[u8]) -> Name {
        Name {
            ptr: create_string(ptr::null_mut(), bytes),
        }
    }

    pub fn ptr(&self) -> *mut raw::RedisModuleString {
        self.ptr
    }

    /// The name's bytes (empty if it could not be made).
    pub fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        let mut len: usize = 0;
        // SAFETY: a live string, owned by `self`.
        let p =
            unsafe { raw::RedisModule_StringPtrLen.map_or(ptr::null(), |f| f(self.ptr, &mut len)) };
        if p.is_null() {
            return &[];
        }
        // SAFETY: p points to len bytes owned by the string, freed with it.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        free_string(ptr::null_mut(), self.ptr);
    }
}

/// An argument vector of new strings, freed on drop: what `RM_Call` and
/// `RM_ACLCheckCommandPermissions` take.
pub struct Strings {
    ptrs: Vec<*mut raw::RedisModuleString>,
}

impl Strings {
    /// The strings of `items`; `None` if one could not be made.
    pub fn new<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Option<Strings> {
        let s = Strings {
            ptrs: items.into_iter().map(new_string).collect(),
        };
        (!s.ptrs.iter().any(|p| p.is_null())).then_some(s)
    }

    pub fn as_mut_ptr(&mut self) -> *mut *mut raw::RedisModuleString {
        self.ptrs.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.ptrs.len()
    }
}

impl Drop for Strings {
    fn drop(&mut self) {
        for &s in &self.ptrs {
            free_string(ptr::null_mut(), s);
        }
    }
}

/// An open key and its name; closed on drop.
pub struct Key {
    ptr: *mut raw::RedisModuleKey,
    name: Name,
}

impl Key {
    /// Opens `name` for reading, or for reading and writing.
    pub fn open(ctx: &Context, name: &[u8], write: bool) -> Key {
        Key::open_name(ctx, Name::new(name), write)
    }

    /// [`Key::open`] with a name already made.
    pub fn open_name(ctx: &Context, name: Name, write: bool) -> Key {
        let s = name.ptr();
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ
        };
        // SAFETY: `s` is a live string; the key keeps its own reference.
        let ptr = unsafe {
            match raw::RedisModule_OpenKey {
                Some(f) if !s.is_null() => {
                    f(ctx.ctx, s, mode as c_int).cast::<raw::RedisModuleKey>()
                }
                _ => ptr::null_mut(),
            }
        };
        Key { ptr, name }
    }

    /// The open key, for the typed APIs of other modules (`ledger`'s
    /// sorted set); null if Redis refused to open it.
    pub fn raw(&self) -> *mut raw::RedisModuleKey {
        self.ptr
    }

    /// `RedisModule_KeyType` of the key (`REDISMODULE_KEYTYPE_*`).
    pub fn key_type(&self) -> isize {
        if self.ptr.is_null() {
            return raw::REDISMODULE_KEYTYPE_EMPTY;
        }
        // SAFETY: `ptr` is an open key.
        unsafe { raw::RedisModule_KeyType.map_or(0, |f| f(self.ptr)) as isize }
    }

    pub fn holds(&self) -> Holds {
        match self.key_type() {
            raw::REDISMODULE_KEYTYPE_EMPTY => Holds::Nothing,
            raw::REDISMODULE_KEYTYPE_STRING => Holds::String,
            _ => Holds::Other,
        }
    }

    /// The string value, `None` if the key is empty, `WRONGTYPE` otherwise.
    pub fn string(&self) -> Result<Option<&[u8]>, Error> {
        match self.holds() {
            Holds::Nothing => Ok(None),
            Holds::Other => Err(Error::WrongType),
            Holds::String => {
                let (p, len) = self.dma(raw::REDISMODULE_READ).ok_or(Error::WrongType)?;
                // SAFETY: p points to len bytes owned by the key, valid until
                // the key is closed or modified (tied to `&self`).
                Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
            }
        }
    }

    /// Fails with `WRONGTYPE` unless the key is empty or holds a string.
    pub fn check_string_or_empty(&self) -> Result<(), Error> {
        match self.holds() {
            Holds::Other => Err(Error::WrongType),
            _ => Ok(()),
        }
    }

    /// Absolute expiry in Unix ms, or `None` without a TTL.
    pub fn abs_expire(&self) -> Option<i64> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` is an open key.
        let t = unsafe { raw::RedisModule_GetAbsExpire.map_or(-1, |f| f(self.ptr)) };
        (t >= 0).then_some(t)
    }

    /// Remaining TTL in ms at `now`: `-1` without a TTL (as `PTTL`).
    pub fn pttl(&self, now: i64) -> i64 {
        self.abs_expire()
            .map_or(-1, |t| t.saturating_sub(now).max(0))
    }

    /// Stores `value` with an absolute expiry (Unix ms) and replicates
    /// `SET key value PXAT expire_at`.
    ///
    /// Writes in place (`StringTruncate` + DMA) rather than through
    /// `StringSet`: an existing string is resized and overwritten without
    /// the extra keyspace lookups and expire removal of `setKey`, which
    /// makes the hot path of `OKOME.RATE` markedly cheaper.
    pub fn set(&self, ctx: &Context, value: &[u8], expire_at: i64) -> Result<(), Error> {
        if self.ptr.is_null() {
            return Err(self.refused("write"));
        }
        if value.is_empty() || !self.write_in_place(value) {
            self.string_set(ctx, value)?;
        }
        self.expire(expire_at)?;
        self.replicated_set(ctx, value, expire_at)
    }

    /// Replicates `SET key value PXAT expire_at` (the value just written)
    /// and signals the write (`set`, then `expire`).
    fn replicated_set(&self, ctx: &Context, value: &[u8], expire_at: i64) -> Result<(), Error> {
        let args = [
            EffectArg::Bytes(value),
            EffectArg::Made(pxat_arg()),
            EffectArg::Int(expire_at),
        ];
        let replicated = self.replicate(ctx, c"SET", &args);
        self.changed(
            ctx,
            &[(raw::REDISMODULE_NOTIFY_STRING, c"set"), EXPIRE_EVENT],
        );
        replicated
    }

    /// Stores `value` through `StringSet` (a new string, copied).
    fn string_set(&self, ctx: &Context, value: &[u8]) -> Result<(), Error> {
        let s = create_string(ctx.ctx, value);
        // SAFETY: key opened for writing; StringSet retains `s`.
        let ok = !s.is_null()
            && unsafe {
                raw::RedisModule_StringSet
                    .is_some_and(|f| f(self.ptr, s) == raw::REDISMODULE_OK as c_int)
            };
        free_string(ctx.ctx, s);
        if ok {
            Ok(())
        } else {
            Err(self.refused("write"))
        }
    }

    /// The value's buffer through DMA (`mode`: read or write), with its
    /// length; `None` if Redis gives none. The pointer is valid until the
    /// key is closed, modified or truncated.
    fn dma(&self, mode: u32) -> Option<(*mut u8, usize)> {
        let mut len: usize = 0;
        // SAFETY: an open key; Redis checks its type and the mode.
        let p = unsafe {
            raw::RedisModule_StringDMA
                .map_or(ptr::null_mut(), |f| f(self.ptr, &mut len, mode as c_int))
        };
        (!p.is_null()).then_some((p.cast::<u8>(), len))
    }

    /// Resizes the string value to `len` bytes (creating an empty key as a
    /// string); whether Redis did.
    fn truncate(&self, len: usize) -> bool {
        // SAFETY: a key opened for writing, empty or holding a string.
        unsafe {
            raw::RedisModule_StringTruncate
                .is_some_and(|f| f(self.ptr, len) == raw::REDISMODULE_OK as c_int)
        }
    }

    fn write_in_place(&self, value: &[u8]) -> bool {
        if self.holds() == Holds::Other || !self.truncate(value.len()) {
            return false;
        }
        match self.dma(raw::REDISMODULE_WRITE) {
            Some((p, len)) if len == value.len() => {
                // SAFETY: DMA gave a writable buffer of exactly len bytes.
                unsafe { ptr::copy_nonoverlapping(value.as_ptr(), p, len) };
                true
            }
            _ => false,
        }
    }

    /// Overwrites the string value from `offset` on with `tail`, growing
    /// it to `offset + tail.len()` (never shrinking it), sets an absolute
    /// expiry (Unix ms), and replicates `SETRANGE key offset tail` then
    /// `PEXPIREAT key expire_at` (Redis wraps the two in `MULTI`/`EXEC`).
    /// A replica and an AOF replay apply the same bytes at the same offset,
    /// so they hold the same value. Written in place: `StringTruncate` grows
    /// the string, then the tail is copied through DMA.
    ///
    /// The caller read the key's current value (a string) and wants it to
    /// keep its first `offset` bytes: if the write cannot be made in place,
    /// nothing is written nor replicated, and it fails.
    pub fn set_range(
        &self,
        ctx: &Context,
        offset: usize,
        tail: &[u8],
        expire_at: i64,
    ) -> Result<(), Error> {
        if !self.write_range(offset, tail) {
            return Err(self.refused("write"));
        }
        self.expire(expire_at)?;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let replicated = self
            .replicate(
                ctx,
                c"SETRANGE",
                &[EffectArg::Int(offset), EffectArg::Bytes(tail)],
            )
            .and_then(|()| self.replicate(ctx, c"PEXPIREAT", &[EffectArg::Int(expire_at)]));
        self.changed(
            ctx,
            &[(raw::REDISMODULE_NOTIFY_STRING, c"setrange"), EXPIRE_EVENT],
        );
        replicated
    }

    /// [`Key::set_range`]'s write in place; whether it was made.
    fn write_range(&self, offset: usize, tail: &[u8]) -> bool {
        if self.ptr.is_null() || self.holds() != Holds::String {
            return false;
        }
        let Some(len) = offset.checked_add(tail.len()) else {
            return false;
        };
        // The string keeps its first `offset` bytes: it never shrinks.
        if !self
            .dma(raw::REDISMODULE_READ)
            .is_some_and(|(_, cur)| cur <= len && self.truncate(len))
        {
            return false;
        }
        match self.dma(raw::REDISMODULE_WRITE) {
            // SAFETY: a writable buffer of exactly `len` bytes, of which
            // [offset, len) is written.
            Some((p, cur)) if cur == len => unsafe {
                ptr::copy_nonoverlapping(tail.as_ptr(), p.add(offset), tail.len());
                true
            },
            _ => false,
        }
    }

    /// Rewrites the string value in place as `head`, then its own bytes
    /// `keep`, then `tail` (`head.len() <= keep.start`: the kept bytes move
    /// towards the start, without a copy through another buffer), sets an
    /// absolute expiry (Unix ms), and replicates `SET key value PXAT
    /// expire_at` with the new value. A large window's compaction: one move
    /// in place, and the one copy `RM_Replicate` makes.
    ///
    /// If the value is not a string of at least `keep.end` bytes, nothing
    /// is written nor replicated, and it fails.
    pub fn set_compacted(
        &self,
        ctx: &Context,
        head: &[u8],
        keep: std::ops::Range<usize>,
        tail: &[u8],
        expire_at: i64,
    ) -> Result<(), Error> {
        let Some((len, buffer)) = self.compact_in_place(head, keep, tail) else {
            return Err(self.refused("write"));
        };
        if len < buffer && !self.truncate(len) {
            // Cannot happen (shrinking a string we hold): store the bytes
            // we meant, the buffer's first `len`, through a copy.
            let value = self
                .string()?
                .and_then(|v| v.get(..len))
                .map(<[u8]>::to_vec);
            self.string_set(ctx, &value.ok_or_else(|| self.refused("write"))?)?;
        }
        self.expire(expire_at)?;
        match self.string()? {
            Some(value) => self.replicated_set(ctx, value, expire_at),
            None => Err(self.refused("write")),
        }
    }

    /// [`Key::set_compacted`]'s move in place: the new value's length, and
    /// the buffer's (at least as long), or `None` if nothing was written.
    fn compact_in_place(
        &self,
        head: &[u8],
        keep: std::ops::Range<usize>,
        tail: &[u8],
    ) -> Option<(usize, usize)> {
        if self.ptr.is_null() || self.holds() != Holds::String || head.len() > keep.start {
            return None;
        }
        let kept = keep.end.checked_sub(keep.start)?;
        let len = head.len().checked_add(kept)?.checked_add(tail.len())?;
        let (_, cur) = self.dma(raw::REDISMODULE_READ)?;
        if keep.end > cur || (len > cur && !self.truncate(len)) {
            return None;
        }
        let (p, n) = self
            .dma(raw::REDISMODULE_WRITE)
            .filter(|&(_, n)| n >= len.max(keep.end))?;
        // SAFETY: a writable buffer of n >= max(len, keep.end) bytes, used
        // before the next call that may move it.
        unsafe {
            ptr::copy(p.add(keep.start), p.add(head.len()), kept);
            ptr::copy_nonoverlapping(head.as_ptr(), p, head.len());
            ptr::copy_nonoverlapping(tail.as_ptr(), p.add(head.len() + kept), tail.len());
        }
        Some((len, n))
    }

    /// Sets an absolute expiry (Unix ms) and replicates `PEXPIREAT`.
    pub fn set_abs_expire(&self, ctx: &Context, expire_at: i64) -> Result<(), Error> {
        self.expire(expire_at)?;
        let replicated = self.replicate(ctx, c"PEXPIREAT", &[EffectArg::Int(expire_at)]);
        self.changed(ctx, &[EXPIRE_EVENT]);
        replicated
    }

    /// Sets an absolute expiry (Unix ms) on the key, opened for writing
    /// and not empty.
    fn expire(&self, expire_at: i64) -> Result<(), Error> {
        // SAFETY: an open key; Redis checks the mode and that it exists.
        let ok = !self.ptr.is_null()
            && unsafe {
                raw::RedisModule_SetAbsExpire
                    .is_some_and(|f| f(self.ptr, expire_at) == raw::REDISMODULE_OK as c_int)
            };
        if ok {
            Ok(())
        } else {
            Err(self.refused("set the expiry of"))
        }
    }

    /// Deletes the key and replicates `DEL`.
    pub fn delete(&self, ctx: &Context) -> Result<(), Error> {
        // SAFETY: an open key; Redis checks the mode.
        let ok = !self.ptr.is_null()
            && unsafe {
                raw::RedisModule_DeleteKey
                    .is_some_and(|f| f(self.ptr) == raw::REDISMODULE_OK as c_int)
            };
        if !ok {
            return Err(self.refused("delete"));
        }
        let replicated = self.replicate(ctx, c"DEL", &[]);
        self.changed(ctx, &[(raw::REDISMODULE_NOTIFY_GENERIC, c"del")]);
        replicated
    }

    /// The error of a write the server did not make (`what`: `write`,
    /// `delete`, ...). The call stops there: what it wrote before stands.
    pub fn refused(&self, what: &str) -> Error {
        Error::Raw(format!(
            "ERR okome: could not {what} '{}' (the server refused); the call stopped there, and what it wrote before stands",
            printable(self.name.bytes())
        ))
    }

    /// Tells Redis the key changed, as a built-in write would: `WATCH` and
    /// client-side caching see it (`signalModifiedKey`), and keyspace
    /// notifications fire (`events`, in order). okome sets
    /// `NO_IMPLICIT_SIGNAL_MODIFIED`, so a key opened for writing but left
    /// unchanged (a refused charge, a held lock) signals nothing.
    pub fn changed(&self, ctx: &Context, events: &[(i32, &CStr)]) {
        let name = self.name.ptr();
        if name.is_null() {
            return;
        }
        // SAFETY: a live context and key name; event names are C strings.
        unsafe {
            if let Some(f) = raw::RedisModule_SignalModifiedKey {
                f(ctx.ctx, name);
            }
            if let Some(f) = raw::RedisModule_NotifyKeyspaceEvent {
                for (kind, event) in events {
                    f(ctx.ctx, *kind, event.as_ptr(), name);
                }
            }
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` is an open key, closed exactly once.
        unsafe {
            if let Some(f) = raw::RedisModule_CloseKey {
                f(self.ptr);
            }
        }
    }
}

/// Redis's clock, Unix ms. Read once per command.
pub fn now_ms() -> i64 {
    // SAFETY: no arguments; the API is initialised at load time.
    unsafe { raw::RedisModule_Milliseconds.map_or(0, |f| f()) }
}

/// Length of a lock token in hex characters (128 random bits).
pub const TOKEN_HEX_LEN: usize = 32;

thread_local! {
    /// Random bytes from Redis's generator not handed out yet, and how
    /// many of them are left (at the end of the buffer). Commands run on
    /// Redis's main thread.
    static RANDOM: std::cell::Cell<([u8; 32], usize)> = const { std::cell::Cell::new(([0; 32], 0)) };
}

/// A fresh random token: 32 lowercase hex characters (128 bits) from
/// Redis's own cryptographic generator (`RM_GetRandomBytes`, an HMAC-SHA256
/// stream). The generator makes 32 bytes per HMAC, so they are asked for 32
/// at a time and serve two tokens (`RM_GetRandomHexChars` spends a byte per
/// hex character: twice the hashing for the same 128 bits).
pub fn new_token() -> Vec<u8> {
    const BYTES: usize = TOKEN_HEX_LEN / 2;
    let (mut pool, mut left) = RANDOM.with(std::cell::Cell::get);
    if left < BYTES {
        // SAFETY: writes exactly `pool.len()` bytes into `pool`.
        unsafe {
            if let Some(f) = raw::RedisModule_GetRandomBytes {
                f(pool.as_mut_ptr(), pool.len());
            }
        }
        left = pool.len();
    }
    let start = pool.len().saturating_sub(left);
    let mut token = Vec::with_capacity(TOKEN_HEX_LEN);
    for b in pool.iter_mut().skip(start).take(BYTES) {
        token.extend_from_slice(&[hex_digit(*b >> 4), hex_digit(*b & 0x0f)]);
        // Handed out: not kept where a later read could see it.
        *b = 0;
    }
    RANDOM.with(|r| r.set((pool, left.saturating_sub(BYTES))));
    token
}

/// The lowercase hex digit of a nibble (`n < 16`).
fn hex_digit(n: u8) -> u8 {
    if n < 10 {
        b'0'.wrapping_add(n)
    } else {
        b'a'.wrapping_add(n.wrapping_sub(10))
    }
}

/// The argument `PXAT`, made on first use and shared by every `SET` effect.
static PXAT: AtomicPtr<raw::RedisModuleString> = AtomicPtr::new(ptr::null_mut());

fn pxat_arg() -> *mut raw::RedisModuleString {
    let p = PXAT.load(Ordering::Relaxed);
    if !p.is_null() {
        return p;
    }
    // Commands run on the main thread only, so this is made once; it is
    // freed by `release_shared` at MODULE UNLOAD.
    let p = create_string(ptr::null_mut(), b"PXAT");
    PXAT.store(p, Ordering::Relaxed);
    p
}

/// Frees the strings shared across commands (at MODULE UNLOAD).
pub fn release_shared() {
    free_string(
        ptr::null_mut(),
        PXAT.swap(ptr::null_mut(), Ordering::Relaxed),
    );
}

/// An argument of a replicated effect, after the key's name.
pub enum EffectArg<'a> {
    /// Bytes, copied by Redis.
    Bytes(&'a [u8]),
    /// An integer.
    Int(i64),
    /// A word (`-inf`), copied by Redis.
    Word(&'a CStr),
    /// A string already made (the shared `PXAT`): Redis takes a reference.
    Made(*mut raw::RedisModuleString),
}

impl Key {
    /// Propagates `cmd key args...` to replicas and the AOF, with the
    /// key's name as made once. Fails if Redis refused, or for arguments
    /// of a shape okome never replicates.
    pub fn replicate(&self, ctx: &Context, cmd: &CStr, args: &[EffectArg]) -> Result<(), Error> {
        use EffectArg::{Bytes, Int, Made, Word};
        let name = self.name.ptr();
        let refused = || self.refused("replicate the write of");
        let Some(f) = unsafe { raw::RedisModule_Replicate }.filter(|_| !name.is_null()) else {
            return Err(refused());
        };
        let (c, cmd) = (ctx.ctx, cmd.as_ptr());
        let buf = |b: &[u8]| b.as_ptr().cast::<c_char>();
        // SAFETY: each format letter matches what follows it: `s` a live
        // string, `b` a buffer and its length, `l` a long long, `c` a C
        // string. Redis copies them, or takes a reference to a string.
        let status = unsafe {
            match *args {
                [] => f(c, cmd, c"s".as_ptr(), name),
                [Bytes(b)] => f(c, cmd, c"sb".as_ptr(), name, buf(b), b.len()),
                [Int(a)] => f(c, cmd, c"sl".as_ptr(), name, a as c_longlong),
                [Int(a), Int(b)] => f(c, cmd, c"sll".as_ptr(), name, a, b as c_longlong),
                [Int(a), Bytes(b)] => f(c, cmd, c"slb".as_ptr(), name, a, buf(b), b.len()),
                [Word(w), Int(b)] => f(c, cmd, c"scl".as_ptr(), name, w.as_ptr(), b),
                [Bytes(v), Made(s), Int(t)] if !s.is_null() => {
                    f(c, cmd, c"sbsl".as_ptr(), name, buf(v), v.len(), s, t)
                }
                _ => return Err(refused()),
            }
        };
        if status == raw::REDISMODULE_OK as c_int {
            Ok(())
        } else {
            Err(refused())
        }
    }
}
