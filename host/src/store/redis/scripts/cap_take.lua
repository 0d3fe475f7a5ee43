-- Takes up to `want` of the fleet's `cap` credits per window, on the Redis server's clock.
-- Members are `ticket:count`. A settled ticket is scored by its ledger commit time and counts
-- for one window after it; a ticket still in flight is scored `now + lease`, so it counts
-- however long its batch takes, until its host settles it or the lease runs out (a host that
-- died). Arguments are built by `CapTakeArgs` (scripts.rs) only.
--
-- KEYS[1] window   P:{cap}:w   zset: `ticket:count` by time
-- ARGV[1] want
-- ARGV[2] cap, credits per window
-- ARGV[3] ticket
-- ARGV[4] lease of an in-flight ticket, ms
-- ARGV[5] window, ms
-- ARGV[6] how soon to look again while a ticket is in flight, ms
-- ARGV[7] the window key's time to live after a write, ms (longer than a lease)
-- Answers {taken, wait_ms}
local window = KEYS[1]
local want, cap, ticket, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local window_ms, in_flight_poll_ms, ttl_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', window, '-inf', now - window_ms)
local members = redis.call('ZRANGE', window, 0, -1, 'WITHSCORES')
local used, wait = 0, window_ms
for i = 1, #members, 2 do
  used = used + tonumber(string.match(members[i], ':(%d+)$'))
  local score = tonumber(members[i + 1])
  if score > now then
    -- In flight: it settles within milliseconds, usually; look again soon.
    wait = math.min(wait, in_flight_poll_ms)
  else
    wait = math.min(wait, score + window_ms - now)
  end
end
local take = math.min(want, cap - used)
if take > 0 then
  redis.call('ZADD', window, now + lease_ms, ticket .. ':' .. take)
  redis.call('PEXPIRE', window, ttl_ms)
  return {take, 0}
end
return {0, math.max(1, wait)}
