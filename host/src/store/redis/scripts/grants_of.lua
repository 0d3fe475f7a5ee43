-- One chunk of an activity's grants in a shard that earlier versions indexed in a zset (new
-- grants are in the stream `grants_since.lua` reads), for reconciliation. Arguments are built by
-- `GrantsOfArgs` (scripts.rs) only.
--
-- KEYS[1] legacy_grants     P:{N}:ag:ACTIVITY   zset: member by seq
-- KEYS[2] parked            P:{N}:pk
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] first rank
-- ARGV[3] last rank (inclusive)
-- Answers rows {parked 0/1, stored record}
local activity_grants, parked = KEYS[1], KEYS[2]
local record_prefix, first, last = ARGV[1], ARGV[2], ARGV[3]
local members = redis.call('ZRANGE', activity_grants, first, last)
local out = {}
for _, m in ipairs(members) do
  out[#out + 1] = grant_row(record_prefix, parked, m)
end
return out
