"""Token buckets that stay correct across processes: in Redis when REDIS_URL is set, in the database otherwise.

A bucket holds up to `per_minute` tokens (one minute of burst) and refills continuously at
per_minute/60 tokens a second. `take()` takes one token from every named bucket at once, or from
none of them, and answers how long to wait when any is empty. Callers delay over-quota work;
nothing is ever dropped here.
"""
import time

from django.conf import settings
from django.db import IntegrityError, transaction

from connectors.models import QuotaBucket

# KEYS: bucket keys. ARGV: now, then one per-minute rate per key. Returns the seconds to wait
# (as a string, Lua numbers lose precision in replies): "0" means the tokens were taken.
_LUA_TAKE = """
local now = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i + 1]) / 60.0
  local capacity = tonumber(ARGV[i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  levels[i] = tokens
  if tokens < 1 then wait = math.max(wait, (1 - tokens) / rate) end
end
for i, key in ipairs(KEYS) do
  local tokens = levels[i]
  if wait == 0 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('EXPIRE', key, 3600)
end
return tostring(wait)
"""

_redis_client = None
_redis_script = None


def _redis():
    global _redis_client, _redis_script
    if _redis_client is None:
        import redis  # only with REDIS_URL: the embedded set-up never loads the client

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _redis_script = _redis_client.register_script(_LUA_TAKE)
    return _redis_script


def take(buckets, now=None):
    """buckets: iterable of (key, per_minute); per_minute None means unlimited (skipped).

    Returns 0.0 when a token was taken from every bucket, else the seconds until one would be.
    """
    buckets = [(key, int(rate)) for key, rate in buckets if rate]
    if not buckets:
        return 0.0
    now = time.time() if now is None else now
    if settings.REDIS_URL:
        keys = [f"{settings.QUOTA_KEY_PREFIX}{key}" for key, _ in buckets]
        return float(_redis()(keys=keys, args=[repr(now), *[rate for _, rate in buckets]]))
    return _take_in_database(buckets, now)


def level(key, per_minute, now=None):
    """Tokens in one bucket now, without taking any (a full bucket if it was never used)."""
    now = time.time() if now is None else now
    rate = int(per_minute)
    if settings.REDIS_URL:
        _redis()  # connects once, as take() does
        tokens, stamp = _redis_client.hmget(f"{settings.QUOTA_KEY_PREFIX}{key}", "tokens", "ts")
        tokens, stamp = (float(tokens), float(stamp)) if tokens is not None else (rate, now)
    else:
        row = QuotaBucket.objects.filter(key=key).first()
        tokens, stamp = (row.tokens, row.stamp) if row else (rate, now)
    return _refilled(tokens, stamp, rate, now)


def _refilled(tokens, stamp, per_minute, now):
    """A bucket's level now: what it held at `stamp`, plus the refill since, up to capacity."""
    return min(per_minute, tokens + max(0.0, now - stamp) * per_minute / 60.0)


def _take_in_database(buckets, now):
    for _ in range(3):  # a concurrent first use of a key may race the insert once
        try:
            with transaction.atomic():
                rows = []
                for key, rate in sorted(buckets):  # a fixed lock order: no deadlocks between takers
                    row = QuotaBucket.objects.select_for_update().filter(key=key).first()
                    if row is None:
                        row = QuotaBucket.objects.create(key=key, tokens=rate, stamp=now)
                    row.tokens = _refilled(row.tokens, row.stamp, rate, now)
                    row.stamp = now
                    rows.append((row, rate))
                wait = max((1 - row.tokens) / (rate / 60.0) if row.tokens < 1 else 0.0 for row, rate in rows)
                for row, _ in rows:
                    if wait == 0:
                        row.tokens -= 1
                    row.save(update_fields=["tokens", "stamp"])
                return wait
        except IntegrityError:
            continue
    raise RuntimeError("quota bucket insert kept racing")
