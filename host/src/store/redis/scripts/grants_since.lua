-- One chunk of an activity's grants in a shard, in seq order, for reconciliation. Arguments
-- are built by `GrantsSinceArgs` (scripts.rs) only.
--
-- KEYS[1] activity_grants   P:{N}:ga:ACTIVITY   stream: entry SEQ-0 {m: member} a grant
-- KEYS[2] parked            P:{N}:pk
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] the entry id to read after, '' for the first
-- ARGV[3] the most entries to read
-- Answers {entries read, last entry id read, rows {parked 0/1, stored record}…} (a record gone
-- since, retired or never written, has no row)
local activity_grants, parked = KEYS[1], KEYS[2]
local record_prefix, after, count = ARGV[1], ARGV[2], ARGV[3]
local start = '-'
if after ~= '' then start = '(' .. after end
local entries = redis.call('XRANGE', activity_grants, start, '+', 'COUNT', count)
local out = {#entries, after}
for _, e in ipairs(entries) do
  out[2] = e[1]
  out[#out + 1] = grant_row(record_prefix, parked, e[2][2])
end
return out
