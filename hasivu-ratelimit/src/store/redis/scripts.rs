//! The Lua scripts, one call per check, and their replies.
//!
//! Both scripts read the clock with Redis `TIME`, so instances with drifting
//! clocks share one timeline, and admit the largest amount `n` with
//! `need <= n <= want` that fits (a plain check asks for `need = want =
//! cost`; a lease asks for a batch). A refusal writes nothing: rejected
//! requests are never counted. Numbers written to Redis go through
//! `string.format('%d')`, because Lua's own number formatting keeps only 14
//! significant digits.
//!
//! Replies: `{admitted (0/1), granted, remaining, reset_after_us,
//! retry_after_us (-1: none)}`.

use std::time::Duration;

/// The sliding-window counter.
///
/// One hash per counter: the current window's index `w`, its count `c` and
/// the previous window's count `p`. The weighted count is
/// `p · (time left in the window / window) + c`. A stored window ahead of
/// the clock (Redis time went back, e.g. after a failover) is kept as the
/// current one, which can only make the limit stricter.
///
/// `KEYS[1]`: the hash. `ARGV`: limit, window (µs), need, want.
pub(super) const SLIDING_WINDOW_COUNTER: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local idx = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(s[1])
local cur, prev = 0, 0
if w ~= nil then
  if w >= idx then
    idx = w
    cur = tonumber(s[2]) or 0
    prev = tonumber(s[3]) or 0
  elseif w == idx - 1 then
    prev = tonumber(s[2]) or 0
  end
end
local elapsed = now - idx * window
if elapsed < 0 then elapsed = 0 end
local left = window - elapsed
local free = math.floor(limit - (prev * left / window + cur))
local granted = math.min(want, free)
if granted < need then
  local retry
  if cur + need <= limit then
    -- Admissible in this window once enough of the previous one has slid out.
    retry = left - (limit - cur - need) * window / prev
  else
    -- Only in the next window, once enough of this one has slid out.
    retry = left + window - (limit - need) * window / cur
  end
  retry = math.ceil(retry) + 1
  if free < 0 then free = 0 end
  return {0, 0, free, left, retry}
end
if granted > 0 then
  redis.call('HSET', KEYS[1], 'w', string.format('%d', idx),
    'c', string.format('%d', cur + granted), 'p', string.format('%d', prev))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((left + window) / 1000)))
end
return {1, granted, free - granted, left, -1}
";

/// The exact sliding log.
///
/// One sorted set per counter: a member per admitted unit, scored with the
/// `TIME` of its admission in microseconds. Members are
/// `<time>:<suffix>:<i>` with a random suffix per call, so requests within
/// the same microsecond never collapse into one entry. Entries older than
/// the window are trimmed before counting.
///
/// `KEYS[1]`: the sorted set. `ARGV`: limit, window (µs), need, want,
/// member suffix.
pub(super) const SLIDING_LOG: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local nows = string.format('%d', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', KEYS[1])
local free = limit - count
local granted = math.min(want, free)
if granted < need then
  -- The entry whose leaving makes room for `need`.
  local k = count + need - limit - 1
  local entry = redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')
  local retry = tonumber(entry[2]) + window - now
  if retry < 1 then retry = 1 end
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if free < 0 then free = 0 end
  return {0, 0, free, tonumber(oldest[2]) + window - now, retry}
end
if granted > 0 then
  local suffix = ARGV[5]
  local args = {}
  for i = 1, granted do
    args[#args + 1] = nows
    args[#args + 1] = nows .. ':' .. suffix .. ':' .. i
    if #args >= 1000 then
      redis.call('ZADD', KEYS[1], unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(window / 1000)))
end
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {1, granted, free - granted, reset, -1}
";

/// A script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    pub(super) admitted: bool,
    /// Units counted (`want` or less; 0 when refused).
    pub(super) granted: u32,
    pub(super) remaining: u32,
    pub(super) reset_after: Duration,
    pub(super) retry_after: Option<Duration>,
}

/// Parses a script's reply; `Err` names what was wrong with it.
pub(super) fn parse(reply: &[i64]) -> Result<Outcome, String> {
    let &[admitted, granted, remaining, reset_us, retry_us] = reply else {
        return Err(format!("expected 5 integers, got {}", reply.len()));
    };
    let admitted = match admitted {
        0 => false,
        1 => true,
        other => return Err(format!("admitted flag {other}")),
    };
    let count = |n: i64, what: &str| u32::try_from(n).map_err(|_| format!("{what} {n}"));
    let retry_after = match (admitted, retry_us) {
        (true, -1) => None,
        (false, us) if us > 0 => Some(micros(us)),
        (_, us) => return Err(format!("retry after {us} µs")),
    };
    Ok(Outcome {
        admitted,
        granted: count(granted, "granted")?,
        remaining: count(remaining, "remaining")?,
        reset_after: micros(reset_us.max(0)),
        retry_after,
    })
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_replies() {
        assert_eq!(
            parse(&[1, 1, 4, 750_000, -1]),
            Ok(Outcome {
                admitted: true,
                granted: 1,
                remaining: 4,
                reset_after: Duration::from_millis(750),
                retry_after: None,
            })
        );
    }

    #[test]
    fn refused_replies_carry_a_retry() {
        let outcome = parse(&[0, 0, 0, 400_000, 1_200_001]).unwrap();
        assert!(!outcome.admitted);
        assert_eq!(outcome.granted, 0);
        assert_eq!(outcome.retry_after, Some(Duration::from_micros(1_200_001)));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[1, 1, 4, 750_000]).is_err());
        assert!(parse(&[2, 1, 4, 750_000, -1]).is_err());
        assert!(parse(&[1, -1, 4, 750_000, -1]).is_err());
        assert!(
            parse(&[1, 1, 4, 750_000, 5]).is_err(),
            "admitted with a retry"
        );
        assert!(
            parse(&[0, 0, 0, 750_000, -1]).is_err(),
            "refused without a retry"
        );
        assert!(parse(&[1, 1, i64::from(u32::MAX) + 1, 0, -1]).is_err());
    }
}
