-- Marks named tokens processing (a forced credit, before a withdrawal), skipping credited and
-- missing ones. Arguments are built by `ClaimKeysArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q   (named so that a cluster routes the script to the shard)
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2], ARGV[3], …  (member, queue id) pairs
-- Answers rows {queue id, record, '2', seq}
local record_prefix = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local g = record_prefix .. ARGV[i]
  local v = redis.call('HMGET', g, 'r', 'st', 'sq')
  if v[1] and v[2] ~= '8' then
    if v[2] == '1' then redis.call('HSET', g, 'st', '2') end
    out[#out + 1] = {ARGV[i + 1], v[1], '2', v[3]}
  end
end
return out
