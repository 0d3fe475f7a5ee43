-- Takes the packets due for a refund sweep: up to a bound of those whose place in the open set
-- is at or before now (Redis's clock: one clock for the whole fleet), each put back a lease
-- later, so hosts take disjoint packets and one that keeps failing steps aside. Arguments:
-- `PacketTakeDueArgs`.
--
-- KEYS[1] open   P:{pko}:open   zset: packet id by when the sweep should look
-- ARGV[1] the most ids to take
-- ARGV[2] the lease, ms
-- Answers the ids taken
local open = KEYS[1]
local max, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', open, '-inf', now_ms, 'LIMIT', 0, max)
for _, id in ipairs(due) do
  redis.call('ZADD', open, 'XX', now_ms + lease_ms, id)
end
return due
