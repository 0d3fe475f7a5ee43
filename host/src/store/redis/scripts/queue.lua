-- Prepended to every script after record.lua (scripts.rs): how a script drops the crediting
-- queue's acknowledged entries.
--
-- drop_acknowledged(queue, group, ids): removes the acknowledged entries `ids` from the stream
-- `queue`. XDEL of one entry costs ≈ 10 µs of Redis's CPU (it rescans the entry's listpack node
-- for the first live entry), trimming ≈ 0.3 µs an entry (BENCHMARKS.md). So the stream is
-- trimmed up to the oldest entry still needed (the oldest pending one, else the first not yet
-- delivered: every entry before it is acknowledged) and only the ids at or past that point,
-- acknowledged while an older entry is still claimed, are deleted one by one. The stream then
-- holds exactly the entries not yet acknowledged, as it did when every id was deleted.
local function stream_id_before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  if a_ms ~= b_ms then return a_ms < b_ms end
  return tonumber(a_seq) < tonumber(b_seq)
end

local function drop_acknowledged(queue, group, ids)
  if #ids == 0 then return end
  local keep = redis.call('XPENDING', queue, group)[2]
  if not keep then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', queue)) do
      local fields = {}
      for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
      if fields['name'] == group then
        local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
        keep = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
      end
    end
  end
  if not keep then
    for _, id in ipairs(ids) do redis.call('XDEL', queue, id) end
    return
  end
  redis.call('XTRIM', queue, 'MINID', keep)
  for _, id in ipairs(ids) do
    if not stream_id_before(id, keep) then redis.call('XDEL', queue, id) end
  end
end
