"""Where firm's Redis clients find the password, and how the password file is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.firm.core.plugins.module_utils import redis_auth


@pytest.fixture
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "firm" / "redis.password"
    monkeypatch.setenv(redis_auth.PASSWORD_FILE_ENV, str(path))
    monkeypatch.delenv(redis_auth.PASSWORD_ENV, raising=False)
    return path


def test_the_password_is_generated_once_private_and_random(password_file: Path) -> None:
    first = redis_auth.ensure_password()
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert len(first) == 2 * redis_auth.PASSWORD_BYTES and int(first, 16) >= 0
    assert redis_auth.ensure_password() == first  # kept, not regenerated
    other = password_file.parent / "other"
    assert redis_auth.ensure_password(str(other)) != first


def test_a_password_file_others_can_read_is_refused_with_the_fix(password_file: Path) -> None:
    redis_auth.ensure_password()
    os.chmod(password_file, 0o644)
    with pytest.raises(redis_auth.RedisPasswordError) as info:
        redis_auth.ensure_password()
    assert "0644" in str(info.value) and f"chmod 600 {password_file}" in info.value.fix


def test_an_empty_password_file_is_refused(password_file: Path) -> None:
    password_file.parent.mkdir()
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(redis_auth.RedisPasswordError, match="empty"):
        redis_auth.ensure_password()


def test_an_unwritable_place_says_how_to_fix_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(redis_auth.RedisPasswordError) as info:
        redis_auth.ensure_password(str(blocker / "redis.password"))
    assert redis_auth.PASSWORD_FILE_ENV in info.value.fix


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://127.0.0.2:6379/0", True),
        ("redis://localhost/0", True),
        ("redis://[::1]:6379/0", True),
        ("unix:///run/redis.sock", True),
        ("redis://10.0.0.5:6379/0", False),
        ("redis://redis.example:6379/0", False),
        ("rediss://192.0.2.1/0", False),
    ],
)
def test_only_a_redis_on_this_machine_gets_the_file_password(
    password_file: Path, url: str, local: bool
) -> None:
    password = redis_auth.ensure_password()
    assert redis_auth.is_local(url) is local
    assert redis_auth.password_for(url) == (password if local else None)


def test_the_url_then_the_environment_then_the_file(
    password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_auth.ensure_password()
    assert redis_auth.password_for("redis://:in-the-url@127.0.0.1:6379/0") is None  # redis-py takes the URL's
    monkeypatch.setenv(redis_auth.PASSWORD_ENV, "from-env")
    assert redis_auth.password_for("redis://127.0.0.1:6379/0") == "from-env"
    assert redis_auth.password_for("redis://10.0.0.5:6379/0") == "from-env"


def test_no_file_means_no_password(password_file: Path) -> None:
    assert redis_auth.read_password() is None
    assert redis_auth.password_for("redis://127.0.0.1:6379/0") is None


def test_the_client_carries_the_password(password_file: Path) -> None:
    password = redis_auth.ensure_password()
    client = redis_auth.connect("redis://127.0.0.1:1/0")
    assert client.connection_pool.connection_kwargs["password"] == password
    assert (
        redis_auth.connect("redis://:mine@127.0.0.1:1/0").connection_pool.connection_kwargs["password"]
        == "mine"
    )
