"""The API key format: ``og_<key id>_<secret>``, and how its secret is stored.

The key id is public (it names the key in listings, logs and the store); the secret is 32
random bytes and is only ever kept as its SHA-256. A slow password hash would buy nothing here:
guessing 256 random bits is hopeless however fast each guess is, which is why GitHub and
others hash their tokens the same way. Comparison is constant-time all the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "og_"
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32, lower-case: easy to read aloud
KEY_ID_LENGTH = 12
SECRET_BYTES = 32

_FORMAT = re.compile(r"^og_([a-z2-7]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True, repr=False)
class ApiKey:
    key_id: str
    secret: str = ""

    def __str__(self) -> str:
        # The secret is never part of a rendering by accident (repr, f-strings, logs).
        return f"{PREFIX}{self.key_id}_***"

    __repr__ = __str__

    @property
    def token(self) -> str:
        """The whole key, as handed to its owner once."""
        return f"{PREFIX}{self.key_id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def generate() -> ApiKey:
    key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return ApiKey(key_id, secret)


def parse(value: str) -> ApiKey | None:
    """The key id and secret of a well-formed key, else None."""
    found = _FORMAT.match(value)
    if found is None:
        return None
    return ApiKey(found.group(1), found.group(2))


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
