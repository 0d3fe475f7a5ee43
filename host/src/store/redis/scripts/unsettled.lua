-- A user's unsettled tokens, oldest first, at most `max + 1` (one more than may be read, so the
-- caller can tell the bound was passed). Arguments are built by `UnsettledArgs` (scripts.rs) only.
--
-- KEYS[1] user_unsettled   P:{N}:uu:ACTID   zset: member by seq
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] max (the read bound)
-- Answers rows {'', record, status, seq}
local user_unsettled = KEYS[1]
local record_prefix, max = ARGV[1], tonumber(ARGV[2])
local members = redis.call('ZRANGE', user_unsettled, 0, max)
local out = {}
for _, m in ipairs(members) do
  local v = redis.call('HMGET', record_prefix .. m, 'r', 'st', 'sq')
  if v[1] then out[#out + 1] = {'', v[1], v[2], v[3]} end
end
return out
