//! The Lua scripts that make every cluster write atomic and fenced.
//!
//! Keys of one feed share a hash tag (`{<hash>}`), so the scripts also run
//! on a Redis Cluster. Every script returns plain values (integers, bulk
//! strings) so nothing on the Rust side parses nested replies.

use redis::Script;

/// Take the lease when nobody holds it: a fencing token made of a
/// per-feed counter and the replica's id, set with `SET NX PX`.
/// KEYS: lease, fence. ARGV: replica, lease ms, ttl ms.
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local token = n .. ':' .. ARGV[1]
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2]) then return token end
return false
"#;

/// Extend the lease if it is still this token's. KEYS: lease. ARGV: token, ms.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Give the lease up if it is still this token's. KEYS: lease. ARGV: token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// One poll's events, snapshot body, validators, sequence and terminal event
/// (an object feed that reached its end), written at once, only by the
/// lease holder and only on top of the sequence it read: a paused ex-leader
/// can neither interleave nor reuse ids. A first write (a new epoch) starts
/// the Stream over but keeps the upstream's status.
/// KEYS: lease, state, stream.
/// ARGV: token, epoch, expected seq, first (1/0), body, etag, last-modified,
/// history, ttl ms, channel, message (the feed's hash), terminal event
/// ('' for none), the announcement's tail (see `notice`), then (seq, event)
/// pairs. The announcement is `<hash> <rev> <tail>`.
/// Returns the new rev, -1 (lease lost) or -2 (sequence moved).
const PUBLISH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('HDEL', KEYS[2], 'end')
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'seq', '1')
else
  local cur = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
  if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return -2 end
end
local seq = nil
for i = 14, #ARGV, 2 do
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[8], ARGV[i] .. '-0', 'e', ARGV[i + 1])
  seq = ARGV[i]
end
if seq then redis.call('HSET', KEYS[2], 'seq', seq) end
redis.call('HSET', KEYS[2], 'body', ARGV[5], 'etag', ARGV[6], 'lm', ARGV[7])
if ARGV[12] ~= '' then redis.call('HSET', KEYS[2], 'end', ARGV[12]) end
local rev = redis.call('HINCRBY', KEYS[2], 'rev', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[9])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[9]) end
redis.call('PUBLISH', ARGV[10], ARGV[11] .. ' ' .. rev .. ' ' .. ARGV[13])
return rev
"#;

/// The upstream's status as the leader saw it (`stale` / `recovered`, each
/// the encoded body every replica tells), only by the lease holder.
/// KEYS: lease, state. ARGV: token, stale (1/0), body, ttl ms, channel, message.
/// Returns the new rev or -1 (lease lost).
const STATUS: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], 'st', '1', 'stale', ARGV[3])
else
  redis.call('HSET', KEYS[2], 'st', '0', 'recovered', ARGV[3])
end
local rev = redis.call('HINCRBY', KEYS[2], 'rev', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return rev
"#;

/// The feed's state and the events after a sequence, in one consistent read.
/// KEYS: state, stream. ARGV: known epoch, known rev, first seq wanted.
/// Returns {} (nothing written), {epoch, seq, rev} (unchanged since the
/// known rev), or {epoch, seq, rev, body, etag, last-modified, stale (1/0),
/// stale body, recovered body, terminal event, seq1, event1, ...}. The epoch
/// is '' while only a status was written (the upstream failed before the
/// first good poll).
const READ: &str = r#"
local st = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'rev', 'body', 'etag', 'lm', 'st', 'stale', 'recovered', 'end')
if not st[3] then return {} end
local epoch = st[1] or ''
if epoch == ARGV[1] and st[3] == ARGV[2] then return {epoch, st[2] or '0', st[3]} end
local out = {epoch, st[2] or '0', st[3], st[4] or '', st[5] or '', st[6] or '', st[7] or '0', st[8] or '', st[9] or '', st[10] or ''}
if epoch == '' then return out end
local from = ARGV[3] .. '-0'
if epoch ~= ARGV[1] then from = '-' end
for _, e in ipairs(redis.call('XRANGE', KEYS[2], from, '+')) do
  local id = e[1]
  out[#out + 1] = string.sub(id, 1, string.find(id, '-', 1, true) - 1)
  out[#out + 1] = e[2][2]
end
return out
"#;

/// Every script, loaded once (`EVALSHA`, falling back to `EVAL`).
pub(crate) struct Scripts {
    pub acquire: Script,
    pub renew: Script,
    pub release: Script,
    pub publish: Script,
    pub status: Script,
    pub read: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            publish: Script::new(PUBLISH),
            status: Script::new(STATUS),
            read: Script::new(READ),
        }
    }
}
