-- Puts named parked tokens back in the crediting queue. Arguments are built by `EntriesArgs`
-- (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q
-- KEYS[2] parked   P:{N}:pk
-- ARGV[1] consumer group (unused)
-- ARGV[2] shard tag (unused)
-- ARGV[3], ARGV[4], ARGV[5], …  (member, seq, queue id) triples
-- Answers how many tokens moved
local queue, parked = KEYS[1], KEYS[2]
local n = 0
for i = 3, #ARGV, 3 do
  local m = ARGV[i]
  if redis.call('ZREM', parked, m) == 1 then
    redis.call('XADD', queue, '*', 'm', m)
    n = n + 1
  end
end
return n
