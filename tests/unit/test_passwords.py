"""Legacy and modern password hashes verify; nothing else does."""

from __future__ import annotations

import hashlib

import bcrypt
import pytest

from edu_migrate.security import passwords

AZERBAIJANI = "Şəhər-Günəş_Çiçək2024"


def _verifies(password: str, stored: str, algo: str) -> bool:
    return passwords.check_login(password, stored, algo).matches


def test_md5_of_utf8_bytes_in_either_case() -> None:
    digest = hashlib.md5(AZERBAIJANI.encode("utf-8")).hexdigest()
    assert _verifies(AZERBAIJANI, digest, "md5")
    assert _verifies(AZERBAIJANI, digest.upper(), "md5")
    assert not _verifies(AZERBAIJANI.lower(), digest, "md5")
    assert not _verifies(AZERBAIJANI, hashlib.md5(AZERBAIJANI.encode("cp1254", "replace"))
                                .hexdigest(), "md5")


def test_bcrypt_including_passwords_longer_than_72_bytes() -> None:
    stored = bcrypt.hashpw(AZERBAIJANI.encode(), bcrypt.gensalt(4)).decode()
    assert _verifies(AZERBAIJANI, stored, "bcrypt")
    assert not _verifies(AZERBAIJANI + "x", stored, "bcrypt")
    long_password = "ə" * 50  # 100 bytes: bcrypt looks at the first 72
    stored_long = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    assert _verifies(long_password, stored_long, "bcrypt")


def test_argon2_round_trip_and_rehash_policy() -> None:
    stored = passwords.hash_password(AZERBAIJANI)
    assert stored.startswith("$argon2id$")
    assert _verifies(AZERBAIJANI, stored, "argon2")
    assert not _verifies("wrong", stored, "argon2")
    assert not passwords.needs_rehash(stored, "argon2")
    assert passwords.needs_rehash(hashlib.md5(b"x").hexdigest(), "md5")
    # Every legacy scheme is replaced at login, bcrypt included.
    assert passwords.needs_rehash("$2b$12$" + "a" * 53, "bcrypt")


@pytest.mark.parametrize(("stored", "algo"), [
    ("not a hash", "bcrypt"), ("not a hash", "argon2"), ("0" * 32, "sha1"), ("", "md5")])
def test_malformed_hashes_and_unknown_algorithms_never_verify(stored: str, algo: str) -> None:
    assert not _verifies("anything", stored, algo)
    assert not passwords.check_login("anything", None, None).matches


def test_hashing_waits_for_a_free_slot() -> None:
    """A flood of logins queues for the hashing slots instead of taking 64 MiB each at once."""
    import threading

    taken = [passwords.hashing_slots.acquire(timeout=5) for _ in range(passwords.HASHING_SLOTS)]
    assert all(taken)
    worker = threading.Thread(target=passwords.hash_password, args=("x",))
    try:
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()
    finally:
        for _ in taken:
            passwords.hashing_slots.release()
    worker.join(10)
    assert not worker.is_alive()


def test_every_legacy_hash_and_an_odd_one_never_raise() -> None:
    md5 = hashlib.md5(AZERBAIJANI.encode()).hexdigest()
    check = passwords.check_login(AZERBAIJANI, md5, "md5")
    assert check.matches and check.new_hash and check.new_hash.startswith("$argon2id$")
    assert not passwords.check_login(AZERBAIJANI, "ş" * 32, "md5").matches
