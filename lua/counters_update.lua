-- counters_update.lua (Redis Cluster only): what config_update.lua does to a config's
-- counters, run after it in the counters' own slot (a script's keys share one slot, and
-- the config plane lives in another). Not atomic with the config write: see
-- docs/redis-topologies.md, "Redis Cluster".
-- KEYS[1] counters hash of the config
-- ARGV[1] how long the kept counters may matter under the new limits (ms): TTL extended
-- ARGV[2] n, the number of new budgets to seed, then per seed 8 values (as in
--         config_update.lua)
-- ARGV[3 + 8n…] counter fields to drop (removed budgets)
-- update_counters: see lib/counter_updates.lua. Returns 1.

update_counters(KEYS[1], 1, now_ms())
return 1
