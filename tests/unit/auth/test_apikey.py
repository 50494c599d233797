"""The API key format and its hashing."""

from __future__ import annotations

import hashlib
import re

from onegate.auth import apikey


def test_generated_keys_have_the_documented_shape() -> None:
    key = apikey.generate()
    assert re.fullmatch(r"og_[a-z2-7]{12}_[A-Za-z0-9_-]{43}", key.token)
    assert apikey.parse(key.token) == key
    assert len({apikey.generate().token for _ in range(200)}) == 200


def test_the_secret_never_shows_in_a_rendering() -> None:
    key = apikey.generate()
    for text in (str(key), repr(key), f"{key}", f"{key!r}"):
        assert key.secret not in text
        assert key.key_id in text


def test_only_the_sha256_of_the_secret_is_kept() -> None:
    key = apikey.generate()
    assert key.secret_hash == hashlib.sha256(key.secret.encode()).hexdigest()
    assert apikey.secret_matches(key.secret, key.secret_hash)
    assert not apikey.secret_matches(key.secret[:-1] + "x", key.secret_hash)


def test_malformed_keys_do_not_parse() -> None:
    good = apikey.generate().token
    for bad in (
        "",
        good[:-1],
        good + "A",
        good.replace("og_", "ok_"),
        good.upper(),
        good.replace("_", "-", 2),
        "og_abcdefghijkl_" + "!" * 43,
        " " + good,
    ):
        assert apikey.parse(bad) is None, bad
