"""The option table drives the README, the sender's defaults and every adapter's names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from moesif_users_middleware._capture.config import ConfigurationError, build_config
from moesif_users_middleware._delivery.options import SenderOptions, validate_sender_options
from moesif_users_middleware._options import (
    CAPTURE_OPTIONS,
    OPTIONS,
    SENDER_OPTIONS,
    adapter_options,
    markdown_table,
)
from moesif_users_middleware.flask import options_from_app_config
from moesif_users_middleware.sender import get_sender

README = Path(__file__).resolve().parent.parent / "README.md"
APP = "test-application-id"


def readme_option_table() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Options\n") :]
    start = section.index("| option | default | meaning |")
    return section[start : section.index("\n\n", start) + 1]


def test_the_readme_option_table_is_the_rendered_table() -> None:
    assert readme_option_table() == markdown_table(), (
        "README.md's option table differs from moesif_users_middleware/_options/table.py: "
        "paste markdown_table()'s output into the README"
    )


def test_every_option_has_one_row_and_a_doc_line() -> None:
    names = [row.name for row in OPTIONS]
    assert len(names) == len(set(names))
    for row in OPTIONS:
        assert row.doc
        assert row.shown
        assert row.where in ("capture", "sender") or adapter_options(row.where.split(",")[0])
    assert set(SENDER_OPTIONS) <= set(CAPTURE_OPTIONS)
    login = ("force_user_load", "get_user_profile", "update_on_login")
    assert adapter_options("flask") == login
    assert adapter_options("django") == login
    assert adapter_options("wsgi") == ("request_class",)


def test_the_sender_defaults_are_the_table_defaults() -> None:
    fields = {field.name: field.default for field in dataclasses.fields(SenderOptions)}
    assert tuple(fields) == SENDER_OPTIONS
    assert fields == {row.name: row.default for row in OPTIONS if row.name in SENDER_OPTIONS}
    assert SenderOptions().max_queue_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize("value", [0, 255, -1, 1.5, True, "16"])
def test_max_queue_bytes_is_checked(value: object) -> None:
    with pytest.raises(ConfigurationError, match="max_queue_bytes"):
        validate_sender_options({"max_queue_bytes": value})


def test_max_queue_bytes_reaches_the_sender_from_every_entry_point() -> None:
    assert validate_sender_options({"max_queue_bytes": 4096}).max_queue_bytes == 4096
    config, _ = build_config({"application_id": APP, "max_queue_bytes": 4096})
    assert config.sender_options == {"max_queue_bytes": 4096}
    options = options_from_app_config({"MOESIF_USERS_MAX_QUEUE_BYTES": 4096})
    assert options == {"max_queue_bytes": 4096}
    sender = get_sender(
        application_id="max-queue-bytes-app", base_url="http://127.0.0.1:9", max_queue_bytes=4096
    )
    try:
        assert sender.options.max_queue_bytes == 4096
    finally:
        sender.shutdown(timeout=0)


def test_an_adapter_names_a_bad_max_queue_bytes_as_the_user_wrote_it() -> None:
    with pytest.raises(ConfigurationError, match=r"settings.MOESIF_USERS\['MAX_QUEUE_BYTES'\]"):
        build_config(
            {"application_id": APP, "max_queue_bytes": "big"}, source="settings.MOESIF_USERS"
        )
