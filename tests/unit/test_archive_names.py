"""Which column names the archive masks whatever their values: credentials and session secrets
in English, Azerbaijani and Russian, snake_case and camelCase."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edu_migrate.mapping.draft import COLUMN_SYNONYMS
from edu_migrate.phases.archive import is_secret_name

SECRET = ["parol", "şifrə", "sifre", "passwordHash", "authToken", "auth_key", "reset_code",
          "security_answer", "Пароль", "пароль_пользователя", "userPassword", "PASSWORD",
          "session_key", "sessionId", "ip_address", "remoteAddr", "apiKey", "client_secret",
          "istifadəçi_parolu", "şifrəsi", "gizli_cavab", "secretQuestionAnswer", "pass_hash"]
INNOCENT = ["id", "label", "description", "username", "email", "passport_no", "compass",
            "passage", "hashtag", "sidebar", "pinned", "answer", "zip", "tip", "first_name",
            "address", "created_at", "session_count", "tokenizer_version"]


@pytest.mark.parametrize("name", SECRET)
def test_secret_names_are_masked(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", INNOCENT)
def test_innocent_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)


def test_every_synonym_the_mapping_knows_for_a_password_is_masked() -> None:
    assert all(is_secret_name(name) for name in ("password", *COLUMN_SYNONYMS["password"]))


@given(st.sampled_from(SECRET), st.sampled_from(["", "old_", "legacy_", "tmp_"]),
       st.sampled_from(["", "_old", "_2019", "_v2"]))
def test_a_secret_name_stays_secret_with_a_prefix_or_suffix(name: str, prefix: str,
                                                           suffix: str) -> None:
    assert is_secret_name(prefix + name + suffix)
