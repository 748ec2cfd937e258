//! `COMMAND DOCS` / `COMMAND INFO` data: a command's arguments and key
//! specs, from its description (`okome_core::command`), turned into the raw
//! structs that `RedisModule_SetCommandInfo` copies. A numeric argument's
//! summary (its range, unit and default) is its bounds'.

use okome_core::command::{Arg, Route, Ty};
use okome_core::declared::Access;
use redis_module::raw;
use std::ffi::{c_char, c_int, CString};
use std::ptr;

/// Owns the C strings and arrays handed to Redis until it has copied them.
#[derive(Default)]
pub struct Arena {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl Arena {
    fn cstr(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c);
        p
    }

    fn opt(&mut self, s: Option<&str>) -> *const c_char {
        s.map_or(ptr::null(), |s| self.cstr(s))
    }

    /// A zero-terminated array of `args`; the pointer stays valid while
    /// the arena lives.
    pub fn args(&mut self, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        if args.is_empty() {
            return ptr::null_mut();
        }
        let mut out = Vec::with_capacity(args.len() + 1);
        for a in args {
            let sub = self.args(a.sub);
            let summary = a.bounds.map(|b| b.summary());
            let ty = match a.ty {
                Ty::Str => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                Ty::Int => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                Ty::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                Ty::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
                Ty::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
                Ty::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
            };
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if a.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if a.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            out.push(raw::RedisModuleCommandArg {
                name: self.cstr(a.name),
                type_: ty,
                key_spec_index: if a.ty == Ty::Key { 0 } else { -1 },
                token: self.opt(a.token),
                summary: self.opt(summary.as_deref()),
                since: ptr::null(),
                flags: flags as c_int,
                deprecated_since: ptr::null(),
                subargs: sub,
                display_text: ptr::null(),
            });
        }
        // SAFETY: an all-zero RedisModuleCommandArg is the array terminator.
        out.push(unsafe { std::mem::zeroed() });
        let p = out.as_mut_ptr();
        self.arrays.push(out);
        p
    }

    /// The routing argument's key spec: one argument at its position,
    /// `NOT_KEY`.
    fn route_spec(&mut self, r: Route) -> raw::RedisModuleCommandKeySpec {
        raw::RedisModuleCommandKeySpec {
            notes: self.cstr(r.notes),
            flags: u64::from(raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_NOT_KEY),
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: r.pos },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                    lastkey: 0,
                    keystep: 1,
                    limit: 0,
                },
            },
        }
    }

    /// The key spec of one group of the tail: its keyword, searched from
    /// the last argument back, then the number of keys, then the keys.
    fn group_spec(&mut self, access: Access) -> raw::RedisModuleCommandKeySpec {
        raw::RedisModuleCommandKeySpec {
            notes: self.cstr(group_notes(access)),
            flags: u64::from(key_flags(access)),
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_KEYWORD,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                keyword: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_2 {
                    keyword: self.cstr(access.keyword()),
                    startfrom: -1,
                },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_KEYNUM,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                keynum: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_2 {
                    keynumidx: 0,
                    firstkey: 1,
                    keystep: 1,
                },
            },
        }
    }

    /// The zero-terminated key-spec array of a command: its routing
    /// argument (`NOT_KEY`: what cluster clients route by) if any, then,
    /// for a command that declares keys, one spec per group of the tail of
    /// declared keys (`okome_core::declared`): the keyword, searched from
    /// the last argument back, then the number of keys, then the keys.
    pub fn key_specs(
        &mut self,
        route: Option<Route>,
        declares: bool,
    ) -> (
        *mut raw::RedisModuleCommandKeySpec,
        Vec<raw::RedisModuleCommandKeySpec>,
    ) {
        let mut v = Vec::with_capacity(5);
        if let Some(r) = route {
            v.push(self.route_spec(r));
        }
        if declares {
            for access in Access::ALL {
                v.push(self.group_spec(access));
            }
        }
        if v.is_empty() {
            return (ptr::null_mut(), v);
        }
        // SAFETY: an all-zero key spec is the array terminator.
        v.push(unsafe { std::mem::zeroed() });
        let p = v.as_mut_ptr();
        (p, v)
    }
}

/// The key-spec flags of a group of declared keys, as Redis's ACL reads
/// them: `ACCESS` needs read permission (`%R~`), `UPDATE` write (`%W~`).
pub fn key_flags(access: Access) -> u32 {
    match access {
        Access::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        Access::Write => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
        Access::ReadWrite => {
            raw::REDISMODULE_CMD_KEY_RW
                | raw::REDISMODULE_CMD_KEY_ACCESS
                | raw::REDISMODULE_CMD_KEY_UPDATE
        }
    }
}

fn group_notes(access: Access) -> &'static str {
    match access {
        Access::Read => "keys the call reads (appended by okome's command filter)",
        Access::Write => {
            "keys the call writes without returning them (appended by okome's command filter)"
        }
        Access::ReadWrite => "keys the call reads and writes (appended by okome's command filter)",
    }
}
