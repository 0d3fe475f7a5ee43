-- Grants (or restores) one token in its user's shard: the replay check, the ledger check, the
-- user's rate window, the shard's stock bucket, then the record, the user's index, the stock
-- and the queue entry, atomically. Arguments are built by `GrantArgs` (scripts.rs) only.
--
-- KEYS[1] record        P:{N}:g:ACTIVITY/ORDER_NO   string: STATUS SEQ|ACTID|SCENE|CENTS|RECORD (stored.rs)
-- KEYS[2] user_tokens   P:{N}:ut:ACTID              zset: flow id by open time
-- KEYS[3] queue         P:{N}:q                     stream: the crediting queue
-- KEYS[4] seq           P:{N}:seq                   string: the shard's sequence
-- KEYS[5] stock         P:{N}:st:ACTIVITY           hash: the shard's stock bucket
-- KEYS[6] activity_grants P:{N}:ga:ACTIVITY         stream: entry SEQ-0 {o: ORDER_NO} a grant
-- KEYS[7] rate          P:{N}:rl:…/WINDOW           string: grants in the user's rate window
-- KEYS[8] vouched       P:{N}:ok:ACTIVITY           string: this shard vouches for the activity
-- KEYS[9] retired_users P:{N}:rx:ACTIVITY:B         set: users with retired records of the activity
-- KEYS[10] credited     P:{N}:cr                    zset: credited records by credit time
-- ARGV[1]  record bytes (protobuf GrantRecord without status and seq; stored.rs)
-- ARGV[2]  actID
-- ARGV[3]  member (ACTIVITY/ORDER_NO)
-- ARGV[4]  flow id
-- ARGV[5]  open time, ms
-- ARGV[6]  amount, cents
-- ARGV[7]  scene id
-- ARGV[8]  shard count
-- ARGV[9]  this shard
-- ARGV[10] '1': the stock was already reserved across buckets; '0': check this bucket
-- ARGV[11] this bucket's share of the scene count (-1: unbounded)
-- ARGV[12] this bucket's share of the scene budget, cents (-1: unbounded)
-- ARGV[13] this bucket's share of the activity budget, cents
-- ARGV[14] the user's rate limit per window (0: none)
-- ARGV[15] the rate window, ms
-- ARGV[16] mode: 'grant', 'restore' or 'restore-credited'
-- ARGV[17] ledger check: 'skipped', 'new', 'clean' or 'checked'
-- Answers {'ok', seq} | {'replay', stored record} | {'present'} | {'rate'} | {'check'} | {'retired'}
--       | {'stock', 'scene_count' | 'scene_budget' | 'activity_budget'}
local record_key, user_tokens, queue = KEYS[1], KEYS[2], KEYS[3]
local seq_key, stock, activity_grants, rate_key, vouched = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local retired_users, credited = KEYS[9], KEYS[10]
local record, act_id, member, flow_id, open_time_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local amount, amount_text, scene = tonumber(ARGV[6]), ARGV[6], ARGV[7]
local shards, shard = tonumber(ARGV[8]), tonumber(ARGV[9])
local reserved = ARGV[10] == '1'
local share_count, share_scene_cents, share_activity_cents = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local rate_max, rate_window_ms = tonumber(ARGV[14]), ARGV[15]
local mode, ledger_check = ARGV[16], ARGV[17]

if redis.call('EXISTS', record_key) == 1 then
  if mode ~= 'grant' then return {'present'} end
  return {'replay', stored_record(record_key)}
end
if mode == 'grant' and redis.call('EXISTS', vouched) == 0 then
  if ledger_check == 'skipped' then return {'check'} end
  if ledger_check == 'clean' then redis.call('SET', vouched, '1') end
end
-- The user's earlier records of the activity may have been retired: only the ledger can tell a
-- replay of one of them from a new order.
if mode == 'grant' and (ledger_check == 'skipped' or ledger_check == 'new')
    and redis.call('SISMEMBER', retired_users, act_id) == 1 then
  return {'retired'}
end
local scene_count_field, scene_cents_field = 's:' .. scene .. ':n', 's:' .. scene .. ':c'
if mode == 'grant' and rate_max > 0 and tonumber(redis.call('GET', rate_key) or '0') >= rate_max then
  return {'rate'}
end
-- The bucket's counts, read once: checked for a grant, and written back below in one HSET
-- instead of four HINCRBYs (each call from a script costs Redis ≈ 0.6 µs of its own). They
-- stay below 2^53 (an activity's budget is at most 10^15 cents), so Lua's numbers hold them
-- exactly.
local n, c, an, a
if not reserved then
  local b = redis.call('HMGET', stock, scene_count_field, scene_cents_field, 'a:n', 'a:c')
  n, c, an, a = tonumber(b[1] or '0'), tonumber(b[2] or '0'), tonumber(b[3] or '0'), tonumber(b[4] or '0')
  if mode == 'grant' then
    if share_count >= 0 and n + 1 > share_count then return {'stock', 'scene_count'} end
    if share_scene_cents >= 0 and c + amount > share_scene_cents then return {'stock', 'scene_budget'} end
    if a + amount > share_activity_cents then return {'stock', 'activity_budget'} end
  end
end
local seq = redis.call('INCR', seq_key) * shards + shard
local seq_text = string.format('%d', seq)
-- First, so that nothing else is written if the stream refused the id. The shard's seq only
-- grows, so it does not; should a partial restore of Redis have set it back, the entry takes
-- the next id instead (retirement then leaves it behind: reconciliation skips it, its record
-- being gone).
-- The entry names the order number alone (field 'o'): the stream's key names the activity, and
-- activity ids have no '/'. Earlier versions wrote the member (field 'm'); grants_since.lua
-- reads both.
local order_no = string.sub(member, string.find(member, '/', 1, true) + 1)
if type(redis.pcall('XADD', activity_grants, seq_text .. '-0', 'o', order_no)) == 'table' then
  redis.call('XADD', activity_grants, '*', 'o', order_no)
end
local st = '1'
if mode == 'restore-credited' then st = '8' end
redis.call('SET', record_key, st .. seq_text .. '|' .. act_id .. '|' .. scene .. '|' .. amount_text .. '|' .. record)
if st == '8' then
  local t = redis.call('TIME')
  redis.call('ZADD', credited, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), member)
end
redis.call('ZADD', user_tokens, open_time_ms, flow_id)
if st == '1' then
  redis.call('XADD', queue, '*', 'm', member)
end
if reserved then
  -- reserve.lua took the scene's count and cents and the activity's cents across buckets.
  redis.call('HINCRBY', stock, 'a:n', 1)
else
  redis.call('HSET', stock, scene_count_field, string.format('%d', n + 1),
    scene_cents_field, string.format('%d', c + amount), 'a:n', string.format('%d', an + 1),
    'a:c', string.format('%d', a + amount))
end
if mode == 'grant' and rate_max > 0 then
  redis.call('INCR', rate_key)
  redis.call('PEXPIRE', rate_key, rate_window_ms)
end
return {'ok', seq}
