-- A user's unsettled tokens (pending or processing), oldest first by open time, at most
-- `max + 1` (one more than may be read, so the caller can tell the bound was passed): the
-- user's tokens whose record is not credited. Arguments are built by `UnsettledArgs`
-- (scripts.rs) only.
--
-- KEYS[1] user_tokens   P:{N}:ut:ACTID   zset: flow id (rp/ACTIVITY/ORDER_NO) by open time
-- ARGV[1] record key start, P:{N}:g:
-- ARGV[2] max (the read bound)
-- Answers rows {'', stored record}
local user_tokens = KEYS[1]
local record_prefix, max = ARGV[1], tonumber(ARGV[2])
local flows = redis.call('ZRANGE', user_tokens, 0, -1)
local out = {}
for _, flow in ipairs(flows) do
  -- The flow id is 'rp/' .. member.
  local v = stored_record(record_prefix .. string.sub(flow, 4))
  if v and string.sub(v, 1, 1) ~= '8' then
    out[#out + 1] = {'', v}
    if #out > max then break end
  end
end
return out
