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

use redis_module::raw;
use std::os::raw::{c_char, c_int, c_longlong};
use std::ptr;

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

unsafe fn rmw(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    expire: bool,
) -> c_int {
    if argc != if expire { 3 } else { 2 } {
        return api!(RedisModule_WrongArity)(ctx);
    }
    let name = *argv.add(1);
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
    unsafe { rmw(ctx, argv, argc, false) }
}

extern "C" fn increx(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: as for `incr`.
    unsafe { rmw(ctx, argv, argc, true) }
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
    let commands: [(&std::ffi::CStr, Callback); 2] = [(c"rmw.incr", incr), (c"rmw.increx", increx)];
    for (name, f) in commands {
        if create(ctx, name.as_ptr(), Some(f), c"write fast".as_ptr(), 1, 1, 1) != OK {
            return ERR;
        }
    }
    OK
}
