"""Request bodies of the Social Network frontend's HTTP contract.

- ``POST /compose_post``: ``{"user_id", "text", "media": [{"id", "type": "png"}]}``; the text is a
  few words, sometimes with ``http://example.com/<random>`` URLs and ``@user_<n>`` mentions of other
  users; 0 to 2 media.
- ``POST /read_home_timeline`` and ``POST /read_user_timeline``: ``{"user_id", "start": 0, "stop": 10}``.

Bodies come from a :class:`random.Random` (fast per call) seeded from the run's seed.
"""

from __future__ import annotations

import json
import random
import string

from firm.load.config import RequestType

WORDS = (
    "the",
    "a",
    "microservice",
    "latency",
    "cloud",
    "coffee",
    "morning",
    "deploy",
    "weekend",
    "graph",
    "friends",
    "music",
    "paper",
    "tail",
    "cache",
    "storage",
    "river",
    "sunset",
    "kernel",
    "train",
    "pizza",
    "garden",
    "review",
    "launch",
    "rain",
    "city",
    "book",
    "movie",
    "running",
    "ocean",
    "project",
    "team",
    "photo",
    "travel",
    "weather",
    "lunch",
    "idea",
    "today",
    "tomorrow",
    "again",
)
_ALPHANUM = string.ascii_letters + string.digits


class PayloadFactory:
    """JSON bodies for each request type; ``users`` bounds the user ids mentioned in posts."""

    def __init__(self, users: int, rng: random.Random) -> None:
        self.users = users
        self.rng = rng

    def body(self, rt: RequestType, user_id: int) -> bytes:
        """The encoded JSON body of one request."""
        if rt is RequestType.COMPOSE_POST:
            return json.dumps(self.compose_post(user_id), separators=(",", ":")).encode()
        return b'{"user_id":%d,"start":0,"stop":10}' % user_id

    def compose_post(self, user_id: int) -> dict[str, object]:
        """A post: 5 to 15 words, 20 % of posts with URLs, 30 % with mentions, 0 to 2 media."""
        rng = self.rng
        words = rng.choices(WORDS, k=rng.randint(5, 15))
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 2)):
                words.insert(
                    rng.randrange(len(words) + 1),
                    "http://example.com/" + "".join(rng.choices(_ALPHANUM, k=16)),
                )
        if rng.random() < 0.3 and self.users > 1:
            for _ in range(rng.randint(1, 2)):
                other = rng.randrange(self.users - 1)
                if other >= user_id:  # anyone but the author
                    other += 1
                words.insert(rng.randrange(len(words) + 1), f"@user_{other}")
        media = [{"id": rng.getrandbits(62), "type": "png"} for _ in range(rng.randint(0, 2))]
        return {"user_id": user_id, "text": " ".join(words), "media": media}
