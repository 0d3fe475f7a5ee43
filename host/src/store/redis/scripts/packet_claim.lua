-- Claims one share of a group red packet for a user, atomically in the packet's slot: a user
-- who claimed before gets the same share again; otherwise none after expiry (by Redis's clock,
-- the one the refund sweep judges by too) or close, none when every share is claimed, else the
-- next share in order. Arguments: `PacketClaimArgs`.
--
-- KEYS[1] state   P:{pk.ID}:s   hash: closed, refund
-- KEYS[2] claims  P:{pk.ID}:c   hash: actID -> share index
-- ARGV[1] actID
-- ARGV[2] the packet's expiry, ms
-- ARGV[3] the packet's share count
-- Answers {'again', index} | {'new', index} | {'expired'} | {'empty'}
local state, claims = KEYS[1], KEYS[2]
local act_id = ARGV[1]
local expires_at_ms, shares = tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local held = redis.call('HGET', claims, act_id)
if held then return {'again', held} end
if redis.call('HGET', state, 'closed') == '1' or now_ms >= expires_at_ms then return {'expired'} end
local index = redis.call('HLEN', claims)
if index >= shares then return {'empty'} end
redis.call('HSET', claims, act_id, index)
return {'new', index}
