-- okome's counters for Prometheus's redis_exporter (oliver006/redis_exporter).
--
--   redis_exporter --redis.addr redis://127.0.0.1:6379 \
--                  --script /path/to/okome-prometheus-exporter.lua
--
-- redis_exporter publishes a module's INFO fields only from its own list,
-- which does not know okome, so `INFO okome` is dropped. This script runs
-- (EVAL, on each scrape) on the server and returns every field of
-- `INFO okome` as alternating names and values, which the exporter
-- publishes as gauges: redis_script_values{key="okome_planner_hits"} 42,
-- one per field, named as in INFO (okome_planner_hits, okome_rate_limited,
-- ..., okome_planner_hit_ratio, okome_waiting_clients). Fields a newer
-- module adds are published too, with no change here.
--
-- Without the module loaded, INFO okome is empty and so is the result:
-- okome_loaded 0 says so (1 when the section is there).
--
-- INFO is allowed in scripts; the script writes nothing and touches no key.

local info = redis.call('INFO', 'okome')

-- A decimal number, as INFO writes them (0, 42, 0.5, 1.0000000000000001e-05):
-- redis_exporter parses every value with Go's ParseFloat, and one that does
-- not parse fails the whole scrape (1.45: redis_up 0), so anything else in
-- the section (a version string, say) is left out.
local function is_number(v)
  return string.match(v, '^[-+]?%d+%.?%d*$') ~= nil
    or string.match(v, '^[-+]?%d+%.?%d*[eE][-+]?%d+$') ~= nil
end

local out = {}
for line in string.gmatch(info, '[^\r\n]+') do
  if string.sub(line, 1, 1) ~= '#' then
    local name, value = string.match(line, '^([%w_]+):(.*)$')
    if name ~= nil and is_number(value) then
      table.insert(out, name)
      table.insert(out, value)
    end
  end
end
table.insert(out, 'okome_loaded')
if #out > 1 then
  table.insert(out, '1')
else
  table.insert(out, '0')
end
return out
