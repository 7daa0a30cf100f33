"""Generated initial passwords: derived from one seed, rotatable, verified by real Dovecot."""

from __future__ import annotations

import subprocess

from mailstack.stack.passwords import PASSWORD_LENGTH, initial_password, initial_password_hash
from tests.conftest import require_tool

SEED = "a" * 48


def test_same_seed_address_and_version_give_the_same_password():
    assert initial_password(SEED, "taro@example.com") == initial_password(SEED, "Taro@Example.com")


def test_bumping_the_version_rotates_one_users_password():
    assert initial_password(SEED, "taro@example.com", 2) != initial_password(SEED, "taro@example.com", 1)


def test_passwords_differ_per_user_and_per_seed():
    assert initial_password(SEED, "taro@example.com") != initial_password(SEED, "hanako@example.com")
    assert initial_password(SEED, "taro@example.com") != initial_password("b" * 48, "taro@example.com")


def test_passwords_avoid_characters_people_misread():
    password = initial_password(SEED, "taro@example.com")
    assert len(password) == PASSWORD_LENGTH and not set(password) & set("0O1lI")


def test_hash_is_deterministic_and_never_contains_the_password():
    password = initial_password(SEED, "taro@example.com")
    hashed = initial_password_hash(SEED, "taro@example.com")
    assert hashed == initial_password_hash(SEED, "taro@example.com") and hashed.startswith("{SSHA512}")
    assert password not in hashed


def test_dovecot_verifies_the_generated_hash_and_rejects_another_password():
    doveadm = require_tool("doveadm")
    hashed = initial_password_hash(SEED, "taro@example.com", 3)
    good = subprocess.run([doveadm, "pw", "-t", hashed, "-p", initial_password(SEED, "taro@example.com", 3)],
                          capture_output=True, text=True)
    assert good.returncode == 0 and "(verified)" in good.stdout + good.stderr
    bad = subprocess.run([doveadm, "pw", "-t", hashed, "-p", initial_password(SEED, "taro@example.com", 2)],
                         capture_output=True, text=True)
    assert bad.returncode != 0
