-- One chunk of an activity's grants in a shard, in seq order, for reconciliation. Arguments
-- are built by `GrantsSinceArgs` (scripts.rs) only.
--
-- KEYS[1] activity_grants   P:{N}:ga:ACTIVITY   stream: entry SEQ-0 {o: ORDER_NO} a grant
--                                               ({m: member} as earlier versions wrote it)
-- KEYS[2] parked            P:{N}:pk
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] the entry id to read after, '' for the first
-- ARGV[3] the most entries to read
-- ARGV[4] what an order number's member starts with, ACTIVITY/
-- Answers {entries read, last entry id read, rows {parked 0/1, stored record}…} (a record gone
-- since, retired or never written, has no row)
local activity_grants, parked = KEYS[1], KEYS[2]
local record_prefix, after, count, member_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local start = '-'
if after ~= '' then start = '(' .. after end
local entries = redis.call('XRANGE', activity_grants, start, '+', 'COUNT', count)
local out = {#entries, after}
for _, e in ipairs(entries) do
  out[2] = e[1]
  local m = e[2][2]
  if e[2][1] == 'o' then m = member_prefix .. m end
  out[#out + 1] = grant_row(record_prefix, parked, m)
end
return out
