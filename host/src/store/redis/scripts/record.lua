-- Prepended to every script (scripts.rs): how a script reads a grant's record.
--
-- stored_record(key): the record at `key` as one string STATUS SEQ|ACTID|SCENE|CENTS|RECORD
-- (stored.rs), or nil when there is none. A record an earlier version wrote as a hash (fields
-- r, st, sq, u, m, s, a) is rewritten in this layout when it is first read, and taken off the
-- user's unsettled set `TAG:uu:ACTID` those versions kept; one written before its scene and
-- cents were kept gets an empty scene and the cents '-', which retirement leaves alone, as it
-- did before.
local function stored_record(key)
  local v = redis.pcall('GET', key)
  if type(v) ~= 'table' then
    if v == false then return nil end
    return v
  end
  local h = redis.call('HMGET', key, 'r', 'st', 'sq', 'u', 's', 'a')
  if not h[1] or not h[2] or not h[3] or not h[4] then return nil end
  v = h[2] .. h[3] .. '|' .. h[4] .. '|' .. (h[5] or '') .. '|' .. (h[6] or '-') .. '|' .. h[1]
  redis.call('DEL', key)
  redis.call('SET', key, v)
  local tag, member = string.match(key, '^(.*):g:(.*)$')
  if tag then redis.call('ZREM', tag .. ':uu:' .. h[4], member) end
  return v
end

-- grant_row(record_prefix, parked, m): {parked 0/1, stored record} for member `m`, whether it is
-- in the zset `parked`; nil when its record is gone (reconciliation's rows).
local function grant_row(record_prefix, parked, m)
  local v = stored_record(record_prefix .. m)
  if not v then return nil end
  local is_parked = 0
  if redis.call('ZSCORE', parked, m) then is_parked = 1 end
  return {is_parked, v}
end

