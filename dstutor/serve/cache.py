"""Response caches for deterministic requests (temperature 0): in-process LRU, or Redis shared by servers.

The key is a hash of everything that decides the answer (model, prompt ids, max_tokens, sampling
settings); the value is the finished answer (text, finish reason, token counts).
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict


def cache_key(model: str, prompt_ids: list[int], max_tokens: int, temperature: float, top_p: float) -> str:
    """A stable key for one deterministic request."""
    payload = json.dumps([model, prompt_ids, max_tokens, temperature, top_p])
    return "dstutor:answer:" + hashlib.sha256(payload.encode()).hexdigest()


class LRUCache:
    """Least-recently-used answers, in this process; capacity 0 disables caching."""

    kind = "lru"

    def __init__(self, capacity: int = 1024):
        if capacity < 0:
            raise ValueError(f"capacity={capacity}: need ≥ 0 (0 disables the cache)")
        self.capacity, self.hits, self.misses = capacity, 0, 0
        self._items: OrderedDict[str, dict] = OrderedDict()

    def get(self, key: str) -> dict | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def set(self, key: str, value: dict) -> None:
        if self.capacity == 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class RedisCache:
    """Answers in a Redis server (shared by every server process pointing at it), expiring after ttl_s."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: int = 3600):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2)
        self.client.ping()  # fail at start-up, with redis-py's message, rather than on the first request
        self.ttl_s, self.hits, self.misses = ttl_s, 0, 0

    def get(self, key: str) -> dict | None:
        raw = self.client.get(key)
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(raw)

    def set(self, key: str, value: dict) -> None:
        self.client.set(key, json.dumps(value), ex=self.ttl_s)

    def __len__(self) -> int:
        return sum(1 for _ in self.client.scan_iter("dstutor:answer:*"))
