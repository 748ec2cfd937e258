//! Benchmark reference, never shipped: the smallest read-modify-write
//! commands the module API allows, loaded next to okome by `make bench` to
//! show how close `OKOME.RATE` comes to the API's own ceiling on the
//! machine it runs on.
//!
//! - `RMW.INCR key`: open for writing, read an 8-byte counter by DMA, add
//!   one, write it back in place, reply the new value. No expiry, no
//!   replication, no ACL check, no parsing.
//! - `RMW.INCREX key ms`: the same, plus what any exact, expiring window
//!   replicated as an effect must also do: set an absolute expiry and
//!   replicate `SET key value PXAT t`.
//! - `RMW.INCREXD id ms`: `RMW.INCREX` on a key derived from `id`, as
//!   `OKOME.RATE` derives its window from the agent id:
//!   `okome:budget:ceil:{<id with ':' as %3A>}`. The key is not an argument,
//!   so the server cannot see it before the command runs (Valkey 8+
//!   prefetches declared keys of pipelined commands; derived keys miss it).

use redis_module::raw;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr;

/// Rust allocations go through Redis's allocator, as okome's do.
#[global_allocator]
static ALLOC: redis_module::alloc::RedisAlloc = redis_module::alloc::RedisAlloc;

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// The API function `$f`, or an error return if Redis did not export it.
macro_rules! api {
    ($f:ident) => {
        match raw::$f {
            Some(f) => f,
            None => return ERR,
        }
    };
}

/// `okome:budget:ceil:{<id>}` with `:` in the id escaped as `%3A`, as a
/// new string (freed by the caller).
unsafe fn derived_key(
    ctx: *mut raw::RedisModuleCtx,
    id: *mut raw::RedisModuleString,
) -> *mut raw::RedisModuleString {
    let mut len = 0usize;
    let p = match raw::RedisModule_StringPtrLen {
        Some(f) => f(id, &mut len),
        None => return ptr::null_mut(),
    };
    if p.is_null() {
        return ptr::null_mut();
    }
    let id = std::slice::from_raw_parts(p.cast::<u8>(), len);
    let mut key = Vec::with_capacity(len + 32);
    key.extend_from_slice(b"okome:budget:ceil:{");
    for &b in id {
        if b == b':' {
            key.extend_from_slice(b"%3A");
        } else {
            key.push(b);
        }
    }
    key.push(b'}');
    match raw::RedisModule_CreateString {
        Some(f) => f(ctx, key.as_ptr().cast::<c_char>(), key.len()),
        None => ptr::null_mut(),
    }
}

unsafe fn rmw(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    expire: bool,
    derived: bool,
) -> c_int {
    if argc != if expire { 3 } else { 2 } {
        return api!(RedisModule_WrongArity)(ctx);
    }
    let name = if derived {
        derived_key(ctx, *argv.add(1))
    } else {
        *argv.add(1)
    };
    if name.is_null() {
        return api!(RedisModule_ReplyWithError)(ctx, c"ERR no key".as_ptr());
    }
    let reply = rmw_key(ctx, name, argv, expire);
    if derived {
        api!(RedisModule_FreeString)(ctx, name);
    }
    reply
}

unsafe fn rmw_key(
    ctx: *mut raw::RedisModuleCtx,
    name: *mut raw::RedisModuleString,
    argv: *mut *mut raw::RedisModuleString,
    expire: bool,
) -> c_int {
    let mut ttl: c_longlong = 0;
    if expire && api!(RedisModule_StringToLongLong)(*argv.add(2), &mut ttl) != OK {
        return api!(RedisModule_ReplyWithError)(ctx, c"ERR ms is not an integer".as_ptr());
    }
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
    let key = api!(RedisModule_OpenKey)(ctx, name, mode).cast::<raw::RedisModuleKey>();
    let close = api!(RedisModule_CloseKey);
    let dma = api!(RedisModule_StringDMA);
    let t = api!(RedisModule_KeyType)(key);
    let mut v: u64 = 0;
    if t == raw::REDISMODULE_KEYTYPE_STRING as c_int {
        let mut len = 0usize;
        let p = dma(key, &mut len, raw::REDISMODULE_READ as c_int);
        if !p.is_null() && len == 8 {
            let mut b = [0u8; 8];
            ptr::copy_nonoverlapping(p.cast::<u8>(), b.as_mut_ptr(), 8);
            v = u64::from_le_bytes(b);
        }
    } else if t != raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
        close(key);
        return api!(RedisModule_ReplyWithError)(ctx, c"WRONGTYPE".as_ptr());
    }
    v = v.wrapping_add(1);
    let b = v.to_le_bytes();
    if api!(RedisModule_StringTruncate)(key, 8) == OK {
        let mut len = 0usize;
        let p = dma(key, &mut len, raw::REDISMODULE_WRITE as c_int);
        if !p.is_null() && len == 8 {
            ptr::copy_nonoverlapping(b.as_ptr(), p.cast::<u8>(), 8);
        }
    }
    if expire {
        let at = api!(RedisModule_Milliseconds)().saturating_add(ttl);
        api!(RedisModule_SetAbsExpire)(key, at);
        let mut klen = 0usize;
        let k = api!(RedisModule_StringPtrLen)(name, &mut klen);
        api!(RedisModule_Replicate)(
            ctx,
            c"SET".as_ptr(),
            c"bbcl".as_ptr(),
            k,
            klen,
            b.as_ptr().cast::<c_char>(),
            b.len(),
            c"PXAT".as_ptr(),
            at,
        );
    }
    close(key);
    api!(RedisModule_ReplyWithLongLong)(ctx, v as c_longlong)
}

extern "C" fn incr(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: called by Redis with a live context and `argc` arguments.
    unsafe { rmw(ctx, argv, argc, false, false) }
}

extern "C" fn increx(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: as for `incr`.
    unsafe { rmw(ctx, argv, argc, true, false) }
}

extern "C" fn increxd(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: as for `incr`.
    unsafe { rmw(ctx, argv, argc, true, true) }
}

type Callback = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut *mut raw::RedisModuleString,
    c_int,
) -> c_int;

/// # Safety
/// Called by Redis once, at load, with a live context.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let api = raw::REDISMODULE_APIVER_1 as c_int;
    if raw::Export_RedisModule_Init(ctx, c"rmw".as_ptr(), 1, api) != OK {
        return ERR;
    }
    let create = api!(RedisModule_CreateCommand);
    // Name, callback, first key (0: the key is derived, none is declared).
    let commands: [(&std::ffi::CStr, Callback, c_int); 3] = [
        (c"rmw.incr", incr, 1),
        (c"rmw.increx", increx, 1),
        (c"rmw.increxd", increxd, 0),
    ];
    for (name, f, key) in commands {
        let flags = c"write fast".as_ptr();
        if create(ctx, name.as_ptr(), Some(f), flags, key, key, key) != OK {
            return ERR;
        }
    }
    OK
}
