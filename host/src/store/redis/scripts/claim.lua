-- Claims from one shard's crediting queue for one writer: entries idle past the reclaim
-- timeout first, then new ones. Entries whose token is credited, parked or gone are
-- acknowledged and dropped; the rest are marked processing. Arguments are built by
-- `ClaimArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q    stream, consumer group ARGV[1]
-- KEYS[2] parked   P:{N}:pk   zset: parked members
-- ARGV[1] consumer group
-- ARGV[2] this writer's consumer name
-- ARGV[3] how many entries at most
-- ARGV[4] reclaim after, ms idle
-- ARGV[5] record key start, P:{N}:g:
-- Answers rows {queue id, stored record, '2'}
local queue, parked = KEYS[1], KEYS[2]
local group, consumer, want, reclaim_after_ms, record_prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local out = {}
local acknowledged = {}
-- Parked tokens are rare (the ledger refused them): most claims find the set empty.
local any_parked = redis.call('EXISTS', parked) == 1
local function take(entries)
  for _, e in ipairs(entries) do
    local id, fields = e[1], e[2]
    local m = fields and fields[2]
    local v = m and stored_record(record_prefix .. m)
    local st = v and string.sub(v, 1, 1)
    if not v or st == '8' or (any_parked and redis.call('ZSCORE', parked, m)) then
      acknowledged[#acknowledged + 1] = id
    else
      if st == '1' then redis.call('SETRANGE', record_prefix .. m, 0, '2') end
      out[#out + 1] = {id, v, '2'}
    end
  end
end
local reclaimed = redis.call('XAUTOCLAIM', queue, group, consumer, reclaim_after_ms, '0-0', 'COUNT', want)
take(reclaimed[2])
if #out < want then
  local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want - #out, 'STREAMS', queue, '>')
  if fresh then take(fresh[1][2]) end
end
call_many({'XACK', queue, group}, acknowledged)
drop_acknowledged(queue, group, acknowledged)
return out
