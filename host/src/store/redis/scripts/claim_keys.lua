-- Marks named tokens processing (a forced credit, before a withdrawal), skipping credited and
-- missing ones. Arguments are built by `ClaimKeysArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q   (named so that a cluster routes the script to the shard)
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2], ARGV[3], …  (member, queue id) pairs
-- Answers rows {queue id, stored record, '2'}
local record_prefix = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local g = record_prefix .. ARGV[i]
  local v = stored_record(g)
  local st = v and string.sub(v, 1, 1)
  if v and st ~= '8' then
    if st == '1' then redis.call('SETRANGE', g, 0, '2') end
    out[#out + 1] = {ARGV[i + 1], v, '2'}
  end
end
return out
