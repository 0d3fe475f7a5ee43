-- A user's tokens for the wallet flow, newest first: the `limit` newest strictly before time
-- `before` (all when empty), plus every token at exactly that time, so that the caller can cut
-- ties by flow id. Arguments are built by `UserTokensArgs` (scripts.rs) only.
--
-- KEYS[1] user_tokens   P:{N}:ut:ACTID   zset: flow id (rp/ACTIVITY/ORDER_NO) by open time
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] before: open time, ms, or '' for the newest
-- ARGV[3] limit
-- Answers rows {flow id, time, stored record} (the record left out when it is gone)
local user_tokens = KEYS[1]
local record_prefix, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rows = {}
if before == '' then
  rows = redis.call('ZREVRANGE', user_tokens, 0, limit - 1, 'WITHSCORES')
else
  local same = redis.call('ZRANGEBYSCORE', user_tokens, before, before, 'WITHSCORES')
  local older = redis.call('ZREVRANGEBYSCORE', user_tokens, '(' .. before, '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
  for _, x in ipairs(same) do rows[#rows + 1] = x end
  for _, x in ipairs(older) do rows[#rows + 1] = x end
end
local out = {}
for i = 1, #rows, 2 do
  local flow = rows[i]
  -- The flow id is 'rp/' .. member.
  local v = stored_record(record_prefix .. string.sub(flow, 4))
  out[#out + 1] = {flow, rows[i + 1], v}
end
return out
