"""The `_FILE` convention: in a cluster each secret setting arrives as a file mounted from a Secret, named by
`APP_<NAME>_FILE`; locally the plain `APP_<NAME>` variable still works. Never both."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic_settings import SettingsError

from app.settings import FILE_SETTINGS, Settings
from tests.app.conftest import ROOT

VARIABLES = [f"APP_{name.upper()}" for name in FILE_SETTINGS]


@pytest.fixture(autouse=True)
def no_secret_settings(monkeypatch):
    """Neither form of any secret setting leaks in from the environment the tests run in."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)


@pytest.mark.parametrize("name", FILE_SETTINGS)
def test_a_secret_setting_is_read_from_the_file_its_FILE_variable_names(name, monkeypatch, tmp_path):
    path = tmp_path / name
    # kubectl create secret --from-file and `echo` keep the trailing newline; the value must not.
    path.write_text("redis://default:s3cret@valkey:6379/0\n")
    monkeypatch.setenv(f"APP_{name.upper()}_FILE", str(path))
    assert getattr(Settings(), name) == "redis://default:s3cret@valkey:6379/0"


def test_the_file_is_read_exactly_but_for_its_trailing_newline(monkeypatch, tmp_path):
    path = tmp_path / "database-url"
    path.write_text(" postgresql://u:p@h/db?a=b \n\n")
    monkeypatch.setenv("APP_DATABASE_URL_FILE", str(path))
    assert Settings().database_url == " postgresql://u:p@h/db?a=b "


@pytest.mark.parametrize("name", FILE_SETTINGS)
def test_a_plain_variable_still_sets_a_secret_setting(name, monkeypatch):
    monkeypatch.setenv(f"APP_{name.upper()}", "amqp://guest:guest@127.0.0.1:5672/%2F")
    assert getattr(Settings(), name) == "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_setting_a_variable_and_its_FILE_is_an_error_naming_both(monkeypatch, tmp_path):
    path = tmp_path / "amqp-url"
    path.write_text("amqp://file")
    monkeypatch.setenv("APP_AMQP_URL", "amqp://env")
    monkeypatch.setenv("APP_AMQP_URL_FILE", str(path))
    with pytest.raises(SettingsError, match="APP_AMQP_URL and APP_AMQP_URL_FILE are both set"):
        Settings()


def test_a_missing_file_is_an_error_naming_the_variable_and_the_path(monkeypatch, tmp_path):
    missing = tmp_path / "not-mounted" / "database-url"
    monkeypatch.setenv("APP_DATABASE_URL_FILE", str(missing))
    with pytest.raises(SettingsError) as raised:
        Settings()
    assert f"APP_DATABASE_URL_FILE={missing}" in str(raised.value)
    assert "No such file or directory" in str(raised.value)


def test_an_unreadable_file_is_an_error_naming_the_variable_and_the_path(monkeypatch, tmp_path):
    # A directory cannot be read as a file, whoever runs the test (root reads any mode bits).
    monkeypatch.setenv("APP_REDIS_URL_FILE", str(tmp_path))
    with pytest.raises(SettingsError, match=f"APP_REDIS_URL_FILE={tmp_path}: cannot read the file"):
        Settings()


def test_only_secret_settings_are_read_from_files(monkeypatch, tmp_path):
    path = tmp_path / "port"
    path.write_text("9999")
    monkeypatch.setenv("APP_PORT_FILE", str(path))
    assert Settings().port == 8000


def test_a_process_exits_naming_the_file_it_cannot_read(tmp_path):
    missing = tmp_path / "database-url"
    migrate = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env={**os.environ, "APP_DATABASE_URL_FILE": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 2
    assert f"APP_DATABASE_URL_FILE={missing}: cannot read the file" in migrate.stderr
    assert "Traceback" not in migrate.stderr


def test_migrations_run_with_the_database_url_from_a_file(database_url, tmp_path):
    path = tmp_path / "database-url"
    path.write_text(database_url + "\n")
    migrate = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env={**os.environ, "APP_DATABASE_URL_FILE": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "database schema is up to date" in migrate.stderr + migrate.stdout
