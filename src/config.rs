//! The configuration in force: module configs `okome.<name>`, settable as
//! `loadmodule` arguments, as `okome.<name> value` lines in redis.conf, and
//! with `CONFIG SET`, readable with `CONFIG GET okome.*`, kept by
//! `CONFIG REWRITE`. The table of tunables, with each one's hard bounds
//! (registered with Redis, which refuses anything outside them), lives in
//! `okome_core::config`. A TTL standard configured outside the seed's is
//! allowed, and said once in the server log at `WARNING` level: at load and
//! at each `CONFIG SET` that changes it.

use okome_core::config::{params, Config, Param};
use redis_module::{raw, Context};
use std::ffi::{c_char, c_int, c_longlong, c_void, CString};
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock};

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);
static PARAMS: OnceLock<Vec<Param>> = OnceLock::new();
/// The configuration last checked against the seed's standards.
static REPORTED: Mutex<Option<Config>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Config>> {
    CONFIG.lock().unwrap_or_else(|e| e.into_inner())
}

fn table() -> &'static [Param] {
    PARAMS.get_or_init(params)
}

/// The configuration for this command.
pub fn current() -> Config {
    lock().unwrap_or_default()
}

fn error_string(msg: &str) -> *mut raw::RedisModuleString {
    // SAFETY: a NULL context creates a string Redis frees itself.
    unsafe {
        raw::RedisModule_CreateString.map_or(ptr::null_mut(), |f| {
            f(ptr::null_mut(), msg.as_ptr().cast::<c_char>(), msg.len())
        })
    }
}

extern "C" fn get_numeric(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    let c = current();
    table()
        .get(privdata as usize)
        .map_or(0, |p| i64::try_from((p.get)(&c)).unwrap_or(i64::MAX))
}

extern "C" fn set_numeric(
    _name: *const c_char,
    val: c_longlong,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    let Some(p) = table().get(privdata as usize) else {
        return raw::REDISMODULE_ERR as c_int;
    };
    let Ok(v) = u64::try_from(val) else {
        if !err.is_null() {
            // SAFETY: Redis passes a valid out-pointer.
            unsafe { *err = error_string(&format!("okome.{} must not be negative", p.name)) };
        }
        return raw::REDISMODULE_ERR as c_int;
    };
    let mut guard = lock();
    let mut c = guard.unwrap_or_default();
    (p.set)(&mut c, v);
    *guard = Some(c);
    raw::REDISMODULE_OK as c_int
}

/// Logs a warning for each config of a TTL standard that lies outside the
/// seed's standard and changed since the last report (all of them the first
/// time). Redis calls `apply` once per config set, and again with the old
/// values when it rolls back: only a change is reported.
fn report_outside_seed(ctx: &Context) {
    let now = current();
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    for msg in now.outside_seed(reported.as_ref()) {
        ctx.log_warning(&msg);
    }
    *reported = Some(now);
}

extern "C" fn apply(
    ctx: *mut raw::RedisModuleCtx,
    _privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    match current().validate() {
        Ok(()) => {
            if !ctx.is_null() {
                report_outside_seed(&Context::new(ctx));
            }
            raw::REDISMODULE_OK as c_int
        }
        Err(msg) => {
            if !err.is_null() {
                // SAFETY: Redis passes a valid out-pointer.
                unsafe { *err = error_string(&msg) };
            }
            raw::REDISMODULE_ERR as c_int
        }
    }
}

/// Applies the `loadmodule` arguments, registers every config and loads the
/// values given in redis.conf.
pub fn init(ctx: &Context, args: &[&[u8]]) -> Result<(), String> {
    let initial = Config::from_module_args(args)?;
    *lock() = Some(initial);
    let register = unsafe { raw::RedisModule_RegisterNumericConfig }
        .ok_or("RedisModule_RegisterNumericConfig is missing (Redis >= 7.0 is required)")?;
    for (i, p) in table().iter().enumerate() {
        let name = CString::new(p.name).map_err(|e| e.to_string())?;
        let flags = if p.memory {
            raw::REDISMODULE_CONFIG_MEMORY
        } else {
            raw::REDISMODULE_CONFIG_DEFAULT
        };
        let default = i64::try_from((p.get)(&initial)).unwrap_or(i64::MAX);
        // SAFETY: callbacks match the expected signatures; privdata is an
        // index into the static table.
        let rc = unsafe {
            register(
                ctx.ctx,
                name.as_ptr(),
                default,
                flags,
                p.min(),
                p.max(),
                Some(get_numeric),
                Some(set_numeric),
                Some(apply),
                i as *mut c_void,
            )
        };
        if rc != raw::REDISMODULE_OK as c_int {
            return Err(format!("could not register config okome.{}", p.name));
        }
    }
    let load =
        unsafe { raw::RedisModule_LoadConfigs }.ok_or("RedisModule_LoadConfigs is missing")?;
    // SAFETY: called once, from OnLoad, after every config is registered.
    if unsafe { load(ctx.ctx) } != raw::REDISMODULE_OK as c_int {
        return Err("invalid okome.* configuration in redis.conf (see the lines above)".into());
    }
    current().validate()?;
    report_outside_seed(ctx);
    Ok(())
}
