"""Configuration: option names, env fallbacks, hook resolution and type errors."""

from __future__ import annotations

from typing import Any

import pytest

from moesif_users_middleware._capture.config import (
    CAPTURE_OPTIONS,
    DEFAULT_BASE_URL,
    HOOK_OPTIONS,
    ConfigurationError,
    MissingApplicationIdError,
    build_config,
    configure_or_disable,
    options_from_upper,
    redact,
    unknown_options_error,
)
from moesif_users_middleware._delivery.options import SENDER_OPTIONS

APP = "app-id-1234567890"


def identify(request: Any, response: Any) -> str:
    return "u1"


async def identify_async(request: Any, response: Any) -> str:
    return "u1"


def one_argument(request: Any) -> str:
    return "u1"


class Hooks:
    @staticmethod
    def company(request: Any, response: Any) -> str:
        return "c1"


not_callable = 42


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESIF_APPLICATION_ID", raising=False)
    monkeypatch.delenv("MOESIF_BASE_URL", raising=False)


def test_capture_options_cover_the_sender_options() -> None:
    assert set(SENDER_OPTIONS) <= set(CAPTURE_OPTIONS)
    assert len(set(CAPTURE_OPTIONS)) == len(CAPTURE_OPTIONS)
    assert set(HOOK_OPTIONS) <= set(CAPTURE_OPTIONS)


def test_defaults() -> None:
    config, extras = build_config({"application_id": APP})
    assert extras == {}
    assert config.application_id == APP
    assert config.base_url == DEFAULT_BASE_URL
    for name in HOOK_OPTIONS:
        assert getattr(config, name) is None
    assert config.trusted_proxies is None
    assert config.client_ip_headers == ()
    assert config.session_token_headers == ("x-api-key",)
    assert config.jwt_user_id_claim is None
    assert config.capture_campaign is True
    assert config.max_user_agent_length == 512
    assert config.enabled is True
    assert dict(config.sender_options) == {}


def test_every_option_is_accepted() -> None:
    options: dict[str, Any] = {
        "application_id": APP,
        "base_url": "http://127.0.0.1:9/",
        **dict.fromkeys(HOOK_OPTIONS, identify),
        "trusted_proxies": ["10.1.0.0/16", "::1"],
        "client_ip_headers": ["CF-Connecting-IP"],
        "session_token_headers": ["X-Api-Key", "X-Auth-Token"],
        "jwt_user_id_claim": "sub",
        "capture_campaign": False,
        "max_user_agent_length": 100,
        "update_companies": False,
        "enabled": True,
        "strict": False,
        "batch_size": 10,
        "max_batch_bytes": 1000,
        "max_queue_size": 5,
        "max_queue_bytes": 4096,
        "flush_interval": 0.5,
        "min_update_interval": 0,
        "timeout": 2,
        "shutdown_timeout": 0,
        "gzip": False,
        "spool_dir": "/var/spool/app",
        "max_spool_bytes": 1 << 20,
    }
    assert set(options) == set(CAPTURE_OPTIONS)
    config, _ = build_config(options)
    assert config.base_url == "http://127.0.0.1:9"
    assert config.identify_user is identify
    assert config.trusted_proxies == ("10.1.0.0/16", "::1")
    assert config.client_ip_headers == ("cf-connecting-ip",)
    assert config.session_token_headers == ("x-api-key", "x-auth-token")
    assert config.jwt_user_id_claim == "sub"
    assert config.capture_campaign is False
    assert config.max_user_agent_length == 100
    assert dict(config.sender_options) == {
        "batch_size": 10,
        "max_batch_bytes": 1000,
        "max_queue_size": 5,
        "max_queue_bytes": 4096,
        "flush_interval": 0.5,
        "min_update_interval": 0,
        "timeout": 2,
        "shutdown_timeout": 0,
        "gzip": False,
        "spool_dir": "/var/spool/app",
        "max_spool_bytes": 1 << 20,
    }


def test_unknown_option_lists_the_valid_ones() -> None:
    # Listed when nothing valid is close to the name given.
    with pytest.raises(ConfigurationError) as info:
        build_config({"application_id": APP, "log_bodies_please": identify})
    message = str(info.value)
    assert "'log_bodies_please'" in message
    for name in CAPTURE_OPTIONS:
        assert name in message


def test_unknown_settings_key_is_named_upper_case() -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config(
            options_from_upper({"APPLICATION_ID": APP, "LOG_BODY": True}),
            source="settings.MOESIF_USERS",
        )
    message = str(info.value)
    assert "'LOG_BODY'" in message
    assert "IDENTIFY_USER" in message
    assert "settings.MOESIF_USERS" in message


def test_extra_options_are_returned_apart() -> None:
    config, extras = build_config(
        {"application_id": APP, "force_user_load": True}, extra_options=("force_user_load",)
    )
    assert extras == {"force_user_load": True}
    assert not hasattr(config, "force_user_load")
    _, extras = build_config({"application_id": APP}, extra_options=("force_user_load",))
    assert extras == {}


def test_options_from_upper() -> None:
    assert options_from_upper({"APPLICATION_ID": APP, "IDENTIFY_USER": identify}) == {
        "application_id": APP,
        "identify_user": identify,
    }
    with pytest.raises(ConfigurationError, match="dict"):
        options_from_upper(["APPLICATION_ID"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="strings"):
        options_from_upper({1: "x"})  # type: ignore[dict-item]


def test_missing_application_id_is_a_clear_error() -> None:
    with pytest.raises(MissingApplicationIdError, match="MOESIF_APPLICATION_ID") as info:
        build_config({})
    assert "application_id" in str(info.value)
    assert "enabled to False" in str(info.value)
    with pytest.raises(ConfigurationError, match=r"settings.MOESIF_USERS\['APPLICATION_ID'\]"):
        build_config({}, source="settings.MOESIF_USERS")
    with pytest.raises(ConfigurationError, match="application_id"):
        build_config({"application_id": "   "})


def test_application_id_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOESIF_APPLICATION_ID", "from-env")
    monkeypatch.setenv("MOESIF_BASE_URL", "http://127.0.0.1:8787/")
    config, _ = build_config({})
    assert config.application_id == "from-env"
    assert config.base_url == "http://127.0.0.1:8787"
    config, _ = build_config({"application_id": APP})
    assert config.application_id == APP


def test_disabled_needs_no_application_id() -> None:
    config, _ = build_config({"enabled": False})
    assert config.enabled is False
    assert config.application_id == ""


def test_repr_never_shows_the_application_id() -> None:
    config, _ = build_config({"application_id": APP})
    assert APP not in repr(config)
    assert APP not in redact(APP)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{__name__}.identify", identify),
        (f"{__name__}:identify", identify),
        (f"  {__name__}.identify  ", identify),
        (f"{__name__}.Hooks.company", Hooks.company),
        (f"{__name__}:Hooks.company", Hooks.company),
        (identify, identify),
        (identify_async, identify_async),
        (None, None),
    ],
)
def test_hooks_accept_callables_and_dotted_paths(value: object, expected: object) -> None:
    for name in HOOK_OPTIONS:
        config, _ = build_config({"application_id": APP, name: value})
        assert getattr(config, name) is expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("no_such_module_xyz.identify", "cannot import 'no_such_module_xyz.identify'"),
        (f"{__name__}.missing", "cannot import"),
        (f"{__name__}:Hooks.missing", "cannot import"),
        ("identify", "not a dotted path"),
        ("", "empty dotted path"),
        (f"{__name__}.not_callable", "must be a callable"),
        (42, "must be a callable or a dotted path string, not int"),
        ([identify], "not list"),
        (one_argument, "cannot be called as hook(request, response)"),
        (f"{__name__}.one_argument", "cannot be called as hook(request, response)"),
    ],
)
def test_bad_hooks_are_errors_naming_the_option(value: object, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config({"application_id": APP, "get_metadata": value})
    message = str(info.value)
    assert message.startswith("get_metadata"), message
    assert fragment in message
    with pytest.raises(ConfigurationError) as info:
        build_config(
            options_from_upper({"APPLICATION_ID": APP, "GET_METADATA": value}),
            source="settings.MOESIF_USERS",
        )
    assert str(info.value).startswith("settings.MOESIF_USERS['GET_METADATA']")


def test_sender_option_errors_name_the_settings_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config(
            options_from_upper({"APPLICATION_ID": APP, "BATCH_SIZE": 0}),
            source="settings.MOESIF_USERS",
        )
    assert str(info.value).startswith("settings.MOESIF_USERS['BATCH_SIZE'] must be at least 1")


def test_an_import_error_inside_the_hook_module_is_reported(
    tmp_path: Any, monkeypatch: Any
) -> None:
    (tmp_path / "broken_hooks_mod.py").write_text("import no_such_dependency_abc\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"identify_user.*no_such_dependency_abc"):
        build_config({"application_id": APP, "identify_user": "broken_hooks_mod.identify"})


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("application_id", 123, "application_id must be a string"),
        ("base_url", "ftp://x", "base_url"),
        ("base_url", 5, "base_url must be a string"),
        ("trusted_proxies", ["not-an-ip"], "trusted_proxies"),
        ("trusted_proxies", 10, "trusted_proxies must be a list"),
        ("trusted_proxies", [10], "trusted_proxies must contain strings"),
        ("client_ip_headers", ["bad header"], "client_ip_headers"),
        ("session_token_headers", ["x api key"], "session_token_headers"),
        ("session_token_headers", {"x-api-key": 1}, "session_token_headers must be a list"),
        ("jwt_user_id_claim", "", "jwt_user_id_claim"),
        ("jwt_user_id_claim", 1, "jwt_user_id_claim"),
        ("capture_campaign", "yes", "capture_campaign must be True or False"),
        ("enabled", 1, "enabled must be True or False"),
        ("max_user_agent_length", 0, "max_user_agent_length"),
        ("max_user_agent_length", True, "max_user_agent_length"),
        ("max_user_agent_length", 10.0, "max_user_agent_length"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("batch_size", 1.5, "batch_size must be an integer"),
        ("max_queue_size", True, "max_queue_size"),
        ("flush_interval", 0, "flush_interval must be more than zero"),
        ("flush_interval", float("nan"), "flush_interval"),
        ("timeout", "5", "timeout"),
        ("min_update_interval", -1, "min_update_interval"),
        ("shutdown_timeout", -0.1, "shutdown_timeout"),
        ("gzip", "true", "gzip must be True or False"),
    ],
)
def test_wrong_types_are_errors_naming_the_option(
    option: str, value: object, fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match="^" + option) as info:
        build_config({"application_id": APP, option: value})
    assert fragment in str(info.value)


def test_strings_are_accepted_for_lists() -> None:
    config, _ = build_config(
        {
            "application_id": APP,
            "trusted_proxies": "10.0.0.1, 10.2.0.0/16",
            "session_token_headers": "X-Api-Key,X-Token",
            "client_ip_headers": "True-Client-IP",
        }
    )
    assert config.trusted_proxies == ("10.0.0.1", "10.2.0.0/16")
    assert config.session_token_headers == ("x-api-key", "x-token")
    assert config.client_ip_headers == ("true-client-ip",)


def test_empty_trusted_proxies_trusts_nobody() -> None:
    config, _ = build_config({"application_id": APP, "trusted_proxies": []})
    assert config.trusted_proxies == ()


def test_config_is_immutable() -> None:
    config, _ = build_config({"application_id": APP, "batch_size": 3})
    with pytest.raises(AttributeError):
        config.enabled = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.sender_options["batch_size"] = 4  # type: ignore[index]


# --- did you mean, and what adapters do with a mistake ---------------------------------------
@pytest.mark.parametrize(
    ("options", "source", "expected"),
    [
        ({"batchsize": 5}, "option", "unknown option 'batchsize': did you mean 'batch_size'?"),
        ({"identfy_user": identify}, "option", "did you mean 'identify_user'?"),
        (
            {"batchsize": 5},
            "settings.MOESIF_USERS",
            "unknown key 'BATCHSIZE' in settings.MOESIF_USERS: did you mean 'BATCH_SIZE'?",
        ),
    ],
)
def test_a_misspelled_option_suggests_the_closest_name(
    options: dict[str, Any], source: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config({"application_id": APP, **options}, source=source)
    assert expected in str(info.value)
    assert "valid ones are" not in str(info.value)  # the suggestion is enough


def test_unknown_options_error_styles_and_multiple_names() -> None:
    error = unknown_options_error(
        ["MOESIF_USERS_BATCHSIZE"],
        ("batch_size", "gzip"),
        style=lambda name: "MOESIF_USERS_" + name.upper(),
        bare=lambda key: key.removeprefix("MOESIF_USERS_"),
        noun="app.config key",
    )
    assert str(error) == (
        "unknown app.config key 'MOESIF_USERS_BATCHSIZE': did you mean 'MOESIF_USERS_BATCH_SIZE'?"
    )
    error = unknown_options_error(["batchsize", "zzz"], ("batch_size", "gzip"))
    assert str(error) == (
        "unknown options 'batchsize' (did you mean 'batch_size'?), 'zzz'; "
        "valid ones are: batch_size, gzip"
    )


def test_a_real_mistake_is_reported_before_a_missing_application_id() -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config({"batchsize": 5})
    assert not isinstance(info.value, MissingApplicationIdError)
    with pytest.raises(ConfigurationError) as info:
        build_config({"flush_interval": -1})
    assert not isinstance(info.value, MissingApplicationIdError)


def test_async_hooks_on_a_sync_framework_are_named() -> None:
    with pytest.raises(ConfigurationError) as info:
        build_config({"application_id": APP, "get_metadata": identify_async}, sync_hooks="Flask")
    message = str(info.value)
    assert message.startswith("get_metadata is an async def hook (")
    assert "identify_async" in message
    assert message.endswith("Flask runs hooks synchronously: make it a plain function")
    config, _ = build_config({"application_id": APP, "get_metadata": identify_async})
    assert config.get_metadata is identify_async  # async-capable adapters accept it


def test_strict_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="strict must be True or False"):
        build_config({"application_id": APP, "strict": "yes"})


def test_configure_or_disable_logs_once_and_returns_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="moesif_users_middleware")
    assert configure_or_disable(lambda: build_config({}), adapter="Test") is None
    assert [(r.levelname, r.name) for r in caplog.records] == [
        ("WARNING", "moesif_users_middleware")
    ]
    assert "MOESIF_APPLICATION_ID" in caplog.records[0].getMessage()
    caplog.clear()
    assert configure_or_disable(lambda: build_config({"batchsize": 5}), adapter="Test") is None
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "did you mean 'batch_size'?" in caplog.records[0].getMessage()
    assert "strict=True" in caplog.records[0].getMessage()
    caplog.clear()
    with pytest.raises(MissingApplicationIdError):
        configure_or_disable(lambda: build_config({}), adapter="Test", strict=True)
    with pytest.raises(ConfigurationError, match="batch_size"):
        configure_or_disable(lambda: build_config({"batchsize": 5}), adapter="Test", strict=True)
    assert caplog.records == []
    disabled = configure_or_disable(lambda: build_config({"enabled": False}), adapter="Test")
    assert disabled is not None
    assert disabled[0].enabled is False
    assert caplog.records == []  # an explicit opt-out is silent
