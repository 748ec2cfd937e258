//! A small RAII wrapper over the low-level key API, working on byte slices,
//! plus the clock, random tokens and effect replication.
//!
//! Keys written through the low-level API are not propagated by Redis, so
//! every write method of [`Key`] also replicates its effect, with absolute
//! times: `SET key value PXAT t`, `PEXPIREAT key t`, `DEL key`, or
//! `SETRANGE key offset bytes` + `PEXPIREAT key t` (a window's tail).

use redis_module::{raw, Context};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_longlong};

/// The notification of a new expiry (`expire`, a generic event).
const EXPIRE_EVENT: (i32, &CStr) = (raw::REDISMODULE_NOTIFY_GENERIC, c"expire");
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

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

    /// The key's name.
    pub fn name(&self) -> &Name {
        &self.name
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
    pub fn string(&self) -> Result<Option<&[u8]>, okome_core::Error> {
        match self.holds() {
            Holds::Nothing => Ok(None),
            Holds::Other => Err(okome_core::Error::WrongType),
            Holds::String => {
                let (p, len) = self
                    .dma(raw::REDISMODULE_READ)
                    .ok_or(okome_core::Error::WrongType)?;
                // SAFETY: p points to len bytes owned by the key, valid until
                // the key is closed or modified (tied to `&self`).
                Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
            }
        }
    }

    /// Fails with `WRONGTYPE` unless the key is empty or holds a string.
    pub fn check_string_or_empty(&self) -> Result<(), okome_core::Error> {
        match self.holds() {
            Holds::Other => Err(okome_core::Error::WrongType),
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
    pub fn set(&self, ctx: &Context, value: &[u8], expire_at: i64) {
        if self.ptr.is_null() {
            return;
        }
        if value.is_empty() || !self.write_in_place(value) {
            let s = create_string(ctx.ctx, value);
            // SAFETY: key opened for writing; StringSet retains `s`.
            unsafe {
                if let Some(f) = raw::RedisModule_StringSet {
                    f(self.ptr, s);
                }
            }
            free_string(ctx.ctx, s);
        }
        self.expire(expire_at);
        self.replicate_set(ctx, value, expire_at);
        self.changed(
            ctx,
            &[(raw::REDISMODULE_NOTIFY_STRING, c"set"), EXPIRE_EVENT],
        );
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
    /// nothing is written nor replicated.
    pub fn set_range(&self, ctx: &Context, offset: usize, tail: &[u8], expire_at: i64) {
        if self.ptr.is_null() || self.holds() != Holds::String {
            return;
        }
        let Some(len) = offset.checked_add(tail.len()) else {
            return;
        };
        // The string keeps its first `offset` bytes: it never shrinks.
        if !self
            .dma(raw::REDISMODULE_READ)
            .is_some_and(|(_, cur)| cur <= len && self.truncate(len))
        {
            return;
        }
        match self.dma(raw::REDISMODULE_WRITE) {
            // SAFETY: a writable buffer of exactly `len` bytes, of which
            // [offset, len) is written.
            Some((p, cur)) if cur == len => unsafe {
                ptr::copy_nonoverlapping(tail.as_ptr(), p.add(offset), tail.len());
            },
            _ => return,
        }
        self.expire(expire_at);
        self.replicate_setrange(ctx, offset, tail);
        self.replicate_pexpireat(ctx, expire_at);
        self.changed(
            ctx,
            &[(raw::REDISMODULE_NOTIFY_STRING, c"setrange"), EXPIRE_EVENT],
        );
    }

    /// Rewrites the string value in place as `head`, then its own bytes
    /// `keep`, then `tail` (`head.len() <= keep.start`: the kept bytes move
    /// towards the start, without a copy through another buffer), sets an
    /// absolute expiry (Unix ms), and replicates `SET key value PXAT
    /// expire_at` with the new value. A large window's compaction: one move
    /// in place, and the one copy `RM_Replicate` makes.
    ///
    /// If the value is not a string of at least `keep.end` bytes, nothing
    /// is written nor replicated.
    pub fn set_compacted(
        &self,
        ctx: &Context,
        head: &[u8],
        keep: std::ops::Range<usize>,
        tail: &[u8],
        expire_at: i64,
    ) {
        if self.ptr.is_null() || self.holds() != Holds::String || head.len() > keep.start {
            return;
        }
        let (Some(kept), Some(len)) = (
            keep.end.checked_sub(keep.start),
            head.len()
                .checked_add(keep.len())
                .and_then(|l| l.checked_add(tail.len())),
        ) else {
            return;
        };
        let Some((_, cur)) = self.dma(raw::REDISMODULE_READ) else {
            return;
        };
        if keep.end > cur || (len > cur && !self.truncate(len)) {
            return;
        }
        let Some((p, n)) = self
            .dma(raw::REDISMODULE_WRITE)
            .filter(|&(_, n)| n >= len.max(keep.end))
        else {
            return;
        };
        // SAFETY: a writable buffer of n >= max(len, keep.end) bytes, used
        // before the next call that may move it.
        unsafe {
            ptr::copy(p.add(keep.start), p.add(head.len()), kept);
            ptr::copy_nonoverlapping(head.as_ptr(), p, head.len());
            ptr::copy_nonoverlapping(tail.as_ptr(), p.add(head.len() + kept), tail.len());
        }
        let done = len >= n || self.truncate(len);
        if !done {
            // Cannot happen (shrinking a string we hold): store the bytes
            // we meant, through a copy.
            let mut value = Vec::with_capacity(len);
            value.extend_from_slice(head);
            if let Ok(Some(v)) = self.string() {
                value.extend_from_slice(v.get(head.len()..head.len() + kept).unwrap_or_default());
            }
            value.extend_from_slice(tail);
            let s = create_string(ctx.ctx, &value);
            // SAFETY: key opened for writing; StringSet retains `s`.
            unsafe {
                if let Some(f) = raw::RedisModule_StringSet {
                    f(self.ptr, s);
                }
            }
            free_string(ctx.ctx, s);
        }
        self.expire(expire_at);
        if let Ok(Some(value)) = self.string() {
            self.replicate_set(ctx, value, expire_at);
        }
        self.changed(
            ctx,
            &[(raw::REDISMODULE_NOTIFY_STRING, c"set"), EXPIRE_EVENT],
        );
    }

    /// Sets an absolute expiry (Unix ms) and replicates `PEXPIREAT`.
    pub fn set_abs_expire(&self, ctx: &Context, expire_at: i64) {
        self.expire(expire_at);
        self.replicate_pexpireat(ctx, expire_at);
        self.changed(ctx, &[EXPIRE_EVENT]);
    }

    fn expire(&self, expire_at: i64) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: key opened for writing and not empty.
        unsafe {
            if let Some(f) = raw::RedisModule_SetAbsExpire {
                f(self.ptr, expire_at);
            }
        }
    }

    /// Deletes the key and replicates `DEL`.
    pub fn delete(&self, ctx: &Context) {
        if self.ptr.is_null() {
            return;
        }
        self.replicate_del(ctx);
        // SAFETY: key opened for writing.
        unsafe {
            if let Some(f) = raw::RedisModule_DeleteKey {
                f(self.ptr);
            }
        }
        self.changed(ctx, &[(raw::REDISMODULE_NOTIFY_GENERIC, c"del")]);
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

/// A fresh random lock token: 32 lowercase hex characters (128 bits) from
/// Redis's own cryptographic generator.
pub fn new_token() -> Vec<u8> {
    let mut buf = vec![0u8; TOKEN_HEX_LEN];
    // SAFETY: writes exactly `len` bytes into `buf`.
    unsafe {
        if let Some(f) = raw::RedisModule_GetRandomHexChars {
            f(buf.as_mut_ptr().cast::<c_char>(), buf.len());
        }
    }
    buf
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

impl Key {
    /// Propagates `SET key value PXAT expire_at` to replicas and the AOF.
    /// The key's name and `PXAT` are passed as strings already made, so
    /// Redis copies only the value and the time.
    fn replicate_set(&self, ctx: &Context, value: &[u8], expire_at: i64) {
        let (name, pxat) = (self.name.ptr(), pxat_arg());
        if name.is_null() || pxat.is_null() {
            return;
        }
        // SAFETY: "sbsl" = string, buffer, string, long long; both strings
        // are live and Redis takes its own references.
        unsafe {
            if let Some(f) = raw::RedisModule_Replicate {
                f(
                    ctx.ctx,
                    c"SET".as_ptr(),
                    c"sbsl".as_ptr(),
                    name,
                    value.as_ptr().cast::<c_char>(),
                    value.len(),
                    pxat,
                    expire_at as c_longlong,
                );
            }
        }
    }

    /// Propagates `SETRANGE key offset tail`.
    fn replicate_setrange(&self, ctx: &Context, offset: usize, tail: &[u8]) {
        let name = self.name.ptr();
        if name.is_null() {
            return;
        }
        // SAFETY: "slb" = string, long long, buffer; Redis copies them.
        unsafe {
            if let Some(f) = raw::RedisModule_Replicate {
                f(
                    ctx.ctx,
                    c"SETRANGE".as_ptr(),
                    c"slb".as_ptr(),
                    name,
                    c_longlong::try_from(offset).unwrap_or(c_longlong::MAX),
                    tail.as_ptr().cast::<c_char>(),
                    tail.len(),
                );
            }
        }
    }

    /// Propagates `PEXPIREAT key expire_at`.
    fn replicate_pexpireat(&self, ctx: &Context, expire_at: i64) {
        let name = self.name.ptr();
        if name.is_null() {
            return;
        }
        // SAFETY: "sl" = string, long long.
        unsafe {
            if let Some(f) = raw::RedisModule_Replicate {
                f(
                    ctx.ctx,
                    c"PEXPIREAT".as_ptr(),
                    c"sl".as_ptr(),
                    name,
                    expire_at as c_longlong,
                );
            }
        }
    }

    /// Propagates `DEL key`.
    fn replicate_del(&self, ctx: &Context) {
        let name = self.name.ptr();
        if name.is_null() {
            return;
        }
        // SAFETY: "s" = string.
        unsafe {
            if let Some(f) = raw::RedisModule_Replicate {
                f(ctx.ctx, c"DEL".as_ptr(), c"s".as_ptr(), name);
            }
        }
    }
}
