"""The social graph: generated from a seed, with the heavy-tailed degrees of real social networks.

Preferential attachment (Barabasi-Albert): each new user befriends ``friends_per_user`` existing
users chosen in proportion to how many friends they already have. With the defaults (962 users,
20 each) that is about 19K friendships, the size of socfb-Reed98 which FIRM used. Friendship is
mutual, as on Facebook: a user's followers are their friends.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import redis


def friendships(users: int, friends_per_user: int, seed: int) -> list[tuple[int, int]]:
    """The edges (a, b) with a < b; the same arguments always give the same graph."""
    rng = random.Random(seed)
    m = friends_per_user
    edges: set[tuple[int, int]] = {(a, b) for a in range(m + 1) for b in range(a + 1, m + 1)}  # a seed clique
    ends = [u for edge in edges for u in edge]  # every user once per friendship: degree-weighted draws
    for user in range(m + 1, users):
        chosen: set[int] = set()
        while len(chosen) < m:
            chosen.add(rng.choice(ends))
        for friend in chosen:
            edges.add((friend, user))
            ends += (friend, user)
    return sorted(edges)


def load(client: redis.Redis, users: int, edges: Iterable[tuple[int, int]]) -> int:
    """Write users, usernames and followers into the application's Redis; returns the edge count."""
    pipe = client.pipeline(transaction=False)
    for user in range(users):
        pipe.hset(f"user:{user}", mapping={"username": f"user_{user}"})
        pipe.hset("usernames", f"user_{user}", user)
    count = 0
    for a, b in edges:
        pipe.sadd(f"followers:{a}", b)
        pipe.sadd(f"followers:{b}", a)
        count += 1
        if count % 5000 == 0:
            pipe.execute()
    pipe.execute()
    client.set("graph:edges", count)
    return count
