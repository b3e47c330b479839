"""Settings: defaults, the .env file, the environment winning, the alias, invalid values."""

from __future__ import annotations

import pytest

from workerrmq.core.credentials import redact_url
from workerrmq.errors import ConfigError
from workerrmq.settings import Settings


def test_defaults_without_environment(tmp_path):
    s = Settings.from_env({}, env_file=tmp_path / "missing.env")
    assert s.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert s.rabbitmq_management_url == "http://guest:guest@127.0.0.1:15672"
    assert s.database_url.startswith("sqlite:///")
    assert s.bind == "0.0.0.0:5000"
    assert s.log_level == "INFO"
    assert s.log_format == "text"
    assert s.bootstrap_api_key == ""
    assert s.default_target_url == ""
    assert s.vhost == "/"
    assert s.http_client == "aiohttp"


def test_env_file_is_read(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "RABBITMQ_URL=amqp://u:p@broker.example:5673/prod\n"
        "RABBITMQ_MANAGEMENT_URL=https://u:p@broker.example:15671\n"
        "DATABASE_URL=postgresql+psycopg://db.example/workerrmq\n"
        "SECRET_KEY=s3cret\n"
        "DEFAULT_TARGET_URL=http://target.example/orders\n"
        "WORKERRMQ_API_KEY=wrmq_fromfile\n"
        "BIND=127.0.0.1:8080\n"
        "LOG_LEVEL=debug\n"
        "LOG_FORMAT=JSON\n"
        "MAX_BATCH=7\n"
        "API_WORKERS=3\n"
    )
    s = Settings.from_env({}, env_file=env_file)
    assert s.rabbitmq_url == "amqp://u:p@broker.example:5673/prod"
    assert s.vhost == "prod"
    assert s.rabbitmq_management_url == "https://u:p@broker.example:15671"
    assert s.database_url == "postgresql+psycopg://db.example/workerrmq"
    assert s.secret_key == "s3cret"
    assert s.default_target_url == "http://target.example/orders"
    assert s.bootstrap_api_key == "wrmq_fromfile"
    assert s.bind == "127.0.0.1:8080"
    assert s.log_level == "DEBUG"
    assert s.log_format == "json"
    assert s.max_batch == 7
    assert s.api_workers == 3


def test_environment_wins_over_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("BIND=127.0.0.1:1111\nLOG_LEVEL=ERROR\n")
    s = Settings.from_env({"BIND": "127.0.0.1:2222"}, env_file=env_file)
    assert s.bind == "127.0.0.1:2222"
    assert s.log_level == "ERROR"  # from the file, the environment does not set it


def test_env_file_default_is_dotenv_in_working_directory(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("BIND=127.0.0.1:3333\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).bind == "127.0.0.1:3333"


def test_seed_alias_for_default_target_url(tmp_path):
    none = tmp_path / "none.env"
    alias = Settings.from_env({"EPINTOWER_API_PROCESS_ORDER": "http://seed.example/x"}, env_file=none)
    assert alias.default_target_url == "http://seed.example/x"
    both = Settings.from_env(
        {
            "EPINTOWER_API_PROCESS_ORDER": "http://seed.example/x",
            "DEFAULT_TARGET_URL": "http://new.example/y",
        },
        env_file=none,
    )
    assert both.default_target_url == "http://new.example/y"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RABBITMQ_URL", "http://127.0.0.1:5672/"),
        ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:notaport/"),
        ("RABBITMQ_MANAGEMENT_URL", "amqp://127.0.0.1:15672"),
        ("DATABASE_URL", "just-a-file.db"),
        ("DEFAULT_TARGET_URL", "ftp://target.example/"),
        ("EPINTOWER_API_PROCESS_ORDER", "not a url"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("BIND", "5000"),
        ("BIND", "127.0.0.1:99999"),
        ("MAX_BATCH", "many"),
        ("MAX_BATCH", "0"),
        ("MAX_REQUEST_BYTES", "10"),
        ("API_WORKERS", "two"),
        ("API_THREADS", "0"),
        ("HTTP_CLIENT", "requests"),
        ("HTTP_CLIENT", "httpx"),
    ],
)
def test_invalid_value_names_its_variable(tmp_path, variable, value):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value}, env_file=tmp_path / "none.env")
    assert info.value.variable == variable
    assert str(info.value).startswith(variable)


@pytest.mark.parametrize(
    ("value", "expected"), [("aiohttp", "aiohttp"), ("reqwest", "reqwest"), (" ReqWest ", "reqwest")]
)
def test_http_client(tmp_path, value, expected):
    assert Settings.from_env({"HTTP_CLIENT": value}, env_file=tmp_path / "none.env").http_client == expected


def test_invalid_http_client_names_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"HTTP_CLIENT": "curl"}, env_file=tmp_path / "none.env")
    assert str(info.value) == "HTTP_CLIENT must be aiohttp or reqwest, got 'curl'"
    with pytest.raises(ConfigError, match="HTTP_CLIENT must be aiohttp or reqwest"):
        Settings(http_client="urllib3").validate()


def test_alias_overridden_by_valid_default_target_url_is_not_checked(tmp_path):
    s = Settings.from_env(
        {"EPINTOWER_API_PROCESS_ORDER": "junk", "DEFAULT_TARGET_URL": "http://ok.example/"},
        env_file=tmp_path / "none.env",
    )
    assert s.default_target_url == "http://ok.example/"


def test_invalid_url_message_does_not_leak_password(tmp_path):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"RABBITMQ_URL": "http://u:topsecret@h:1/"}, env_file=tmp_path / "x")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("http://admin:p%40ss@mgmt.example:15672", "http://admin:***@mgmt.example:15672"),
        ("postgresql+psycopg://u:pw@[::1]:5432/db", "postgresql+psycopg://u:***@[::1]:5432/db"),
        ("amqp://127.0.0.1:5672/%2F", "amqp://127.0.0.1:5672/%2F"),
        ("sqlite:///var/workerrmq.sqlite3", "sqlite:///var/workerrmq.sqlite3"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_repr_hides_secrets():
    s = Settings(
        rabbitmq_url="amqp://u:amqp-secret@h:5672/%2F",
        rabbitmq_management_url="http://u:mgmt-secret@h:15672",
        database_url="postgresql+psycopg://u:db-secret@h/db",
        secret_key="flask-secret",
        bootstrap_api_key="wrmq_bootstrap-secret",
    )
    text = repr(s)
    for secret in ("amqp-secret", "mgmt-secret", "db-secret", "flask-secret", "bootstrap-secret"):
        assert secret not in text
    assert "bind='0.0.0.0:5000'" in text
