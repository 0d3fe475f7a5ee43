-- Replaces a ticket's reservation in the fleet's credit window with the credits made, stamped
-- now (the ledger commit). Arguments are built by `CapSettleArgs` (scripts.rs) only.
--
-- KEYS[1] window   P:{cap}:w   zset: `ticket:count` by time
-- ARGV[1] ticket
-- ARGV[2] credits made
-- ARGV[3] the window key's time to live after a write, ms
-- Answers 1
local window = KEYS[1]
local ticket, credits, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = redis.call('ZRANGE', window, 0, -1)
for _, m in ipairs(members) do
  if string.sub(m, 1, #ticket + 1) == ticket .. ':' then redis.call('ZREM', window, m) end
end
if tonumber(credits) > 0 then
  redis.call('ZADD', window, now, ticket .. ':' .. credits)
  redis.call('PEXPIRE', window, ttl_ms)
end
return 1
