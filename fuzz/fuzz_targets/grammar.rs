//! Every command's argument grammar on arbitrary arguments: never panics,
//! and every error renders as an `ERR`/`WRONGTYPE` reply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use okome_core::command::*;
use okome_core::config::Config;

fuzz_target!(|data: &[u8]| {
    // Split the input into arguments at 0xFF bytes.
    let args: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let cfg = Config::default();
    let check = |e: okome_core::Error| {
        let s = e.to_string();
        assert!(s.starts_with("ERR ") || s.starts_with("WRONGTYPE "), "{s}");
        assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
    };
    let _ = parse_plan_get(&args, &cfg).map_err(check);
    let _ = parse_plan_lookup(&args, &cfg).map_err(check);
    let _ = parse_plan_set(&args, &cfg).map_err(check);
    let _ = parse_lock(&args, &cfg).map_err(check);
    let _ = parse_unlock(&args, &cfg).map_err(check);
    let _ = parse_cache_get(&args).map_err(check);
    let _ = parse_cache_set(&args, &cfg).map_err(check);
    let _ = parse_key(&args, &cfg).map_err(check);
    let _ = parse_rate(&args).map_err(check);
    let _ = parse_wbudget(&args, &cfg).map_err(check);
    let _ = Config::from_module_args(&args);
});
