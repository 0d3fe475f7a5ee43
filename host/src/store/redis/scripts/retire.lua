-- Retires a shard's credited records whose retention has passed (by Redis's clock): each
-- record leaves with every index of it (the user's token list, the activity's grants), its
-- count and cents join the activity's retired totals, and its user joins the activity's
-- retired users. The stock it used stays counted. Arguments are built by `RetireArgs`
-- (scripts.rs) only.
--
-- KEYS[1] credited  P:{N}:cr   zset: member (ACTIVITY/ORDER_NO) by credit time, ms
-- ARGV[1] shard tag, P:{N}
-- ARGV[2] retention, ms
-- ARGV[3] the most records to retire
-- ARGV[4] shard count (for the retired users' bucket)
-- ARGV[5] retired users' buckets per shard and activity
-- Answers {retired, due seen}
local credited = KEYS[1]
local tag, retain_ms, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local shards, buckets = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', credited, '-inf', now - retain_ms, 'LIMIT', 0, max)
local n = 0
-- What the batch changes, gathered so that each key takes one command: the records to delete,
-- each activity's retired seqs, its totals by scene and its retired users by bucket.
local records, indexed, totals, users = {}, {}, {}, {}
local legacy_index = {}
for _, m in ipairs(due) do
  local g = tag .. ':g:' .. m
  local stored = stored_record(g)
  local v = {}
  if stored then v = {string.match(stored, '^(%d)(%d+)|(-?%d+)|([^|]*)|(-?%d+)|')} end
  local activity = string.match(m, '^([^/]+)/')
  if v[1] == '8' and v[3] and activity then
    records[#records + 1] = g
    redis.call('ZREM', tag .. ':ut:' .. v[3], 'rp/' .. m)
    local seqs = indexed[activity]
    if not seqs then
      seqs = {}
      indexed[activity] = seqs
      totals[activity] = {}
      -- Earlier versions indexed the activity's grants in a zset.
      local ag = tag .. ':ag:' .. activity
      if redis.call('EXISTS', ag) == 1 then legacy_index[activity] = ag end
    end
    seqs[#seqs + 1] = tonumber(v[2])
    if legacy_index[activity] then redis.call('ZREM', legacy_index[activity], m) end
    local scene = totals[activity][v[4]]
    if not scene then
      scene = {0, 0}
      totals[activity][v[4]] = scene
    end
    scene[1] = scene[1] + 1
    scene[2] = scene[2] + tonumber(v[5])
    local digits = string.sub((string.gsub(v[3], '-', '')), -6)
    local bucket = tag .. ':rx:' .. activity .. ':' .. (math.floor(tonumber(digits) / shards) % buckets)
    if not users[bucket] then users[bucket] = {} end
    table.insert(users[bucket], v[3])
    n = n + 1
  end
end
call_many({'DEL'}, records)
call_many({'ZREM', credited}, due)
for activity, scenes in pairs(totals) do
  local key = tag .. ':rr:' .. activity
  for scene, sums in pairs(scenes) do
    redis.call('HINCRBY', key, 's:' .. scene .. ':n', string.format('%d', sums[1]))
    redis.call('HINCRBY', key, 's:' .. scene .. ':c', string.format('%d', sums[2]))
  end
end
for bucket, members in pairs(users) do call_many({'SADD', bucket}, members) end
-- The retired grants leave their activities' indexes. Credited in about the order they were
-- granted, they are mostly the oldest entries of the stream: the ones that start it are trimmed
-- (≈ 0.3 µs an entry), the rest deleted one by one (XDEL: ≈ 10 µs, see queue.lua).
for activity, seqs in pairs(indexed) do
  local stream = tag .. ':ga:' .. activity
  table.sort(seqs)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', #seqs + 1)
  local k = 0
  while k < #seqs and head[k + 1] and head[k + 1][1] == string.format('%d-0', seqs[k + 1]) do k = k + 1 end
  if k > 0 then
    if head[k + 1] then
      redis.call('XTRIM', stream, 'MINID', head[k + 1][1])
    else
      redis.call('DEL', stream)
    end
  end
  for i = k + 1, #seqs do redis.call('XDEL', stream, string.format('%d-0', seqs[i])) end
end
return {n, #due}
