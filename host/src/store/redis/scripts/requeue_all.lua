-- Puts every parked token of a shard back in the crediting queue. Arguments are built by
-- `QueueArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q
-- KEYS[2] parked   P:{N}:pk
-- Answers how many tokens moved
local queue, parked = KEYS[1], KEYS[2]
local members = redis.call('ZRANGE', parked, 0, -1)
for _, m in ipairs(members) do
  redis.call('XADD', queue, '*', 'm', m)
end
redis.call('DEL', parked)
return #members
