"""Configuration: modes from keys, live-mode refusals, and the docs that list every setting."""

import os

import pytest

from settings import SETTINGS, ConfigError, load_config
from tests.conftest import ROOT


def test_defaults_are_offline_mode_on_loopback():
    config = load_config(environ={})
    assert config.mode == "offline"
    assert config.base_url == "http://127.0.0.1:8000"
    assert config.host == "127.0.0.1" and config.port == 8000
    assert config.catalog == ROOT / "catalog.json"


@pytest.mark.parametrize("key, mode", [
    ("", "offline"), ("sk_test_abc", "test"), ("rk_test_abc", "test"),
])
def test_key_selects_mode(key, mode):
    assert load_config(environ={"STRIPE_SECRET_KEY": key}).mode == mode


def test_live_mode_refuses_http_base_url():
    with pytest.raises(ConfigError, match="BASE_URL: live mode needs an https://"):
        load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "http://shop.example.com",
                             "STRIPE_WEBHOOK_SECRET": "whsec_x"})


def test_live_mode_refuses_missing_webhook_secret():
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET: live mode needs"):
        load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com"})


def test_live_mode_starts_with_https_and_secret():
    config = load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com/",
                                  "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    assert config.mode == "live" and config.secure and config.base_url == "https://shop.example.com"


@pytest.mark.parametrize("given, origin", [
    ("http://LOCALHOST:8807/", "http://localhost:8807"), ("https://Shop.Example.com:443", "https://shop.example.com"),
    ("HTTP://shop.example.com:80/store/", "http://shop.example.com/store"), ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_base_url_is_written_as_a_browser_writes_its_origin(given, origin):
    """The CSRF check compares a form's Origin header with BASE_URL: an uppercase host or a default port in
    BASE_URL would refuse every form."""
    assert load_config(environ={"BASE_URL": given}).base_url == origin


@pytest.mark.parametrize("env, message", [
    ({"STRIPE_SECRET_KEY": "pk_test_abc"}, "STRIPE_SECRET_KEY: must start with"),
    ({"BASE_URL": "http://user:pw@shop.example.com"}, "BASE_URL: must be an absolute http(s) URL"),
    ({"BASE_URL": "http://shop.example.com:99999"}, "BASE_URL: must be an absolute http(s) URL"),
    ({"PORT": "eighty"}, "PORT: must be a whole number"),
    ({"PORT": "70000"}, "PORT: out of range"),
    ({"BASE_URL": "shop.example.com"}, "BASE_URL: must be an absolute http(s) URL"),
    ({"STRIPE_WEBHOOK_SECRET": "secret"}, "STRIPE_WEBHOOK_SECRET: must start with whsec_"),
    ({"STRIPE_API_BASE": "http://127.0.0.1:12111"}, "STRIPE_API_BASE: needs a STRIPE_SECRET_KEY"),
    ({"STRIPE_TIMEOUT": "-1"}, "STRIPE_TIMEOUT: must be between"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert message in e.value.message


def test_public_view_masks_secrets():
    config = load_config(environ={"STRIPE_SECRET_KEY": "sk_test_supersecretvalue123",
                                  "STRIPE_WEBHOOK_SECRET": "whsec_topsecret"})
    shown = repr(config.public())
    assert "supersecretvalue123" not in shown and "topsecret" not in shown


def test_every_setting_is_documented_in_env_sample_and_readme():
    sample = (ROOT / ".env.sample").read_text()
    readme = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        assert f"\n{s.env}=" in sample, s.env
        assert f"`{s.env}`" in readme, s.env


def test_make_app_without_config_reads_dot_env_but_the_environment_wins(tmp_path, monkeypatch):
    import shop
    env_file = tmp_path / ".env"
    env_file.write_text(f"DATA_DIR={tmp_path / 'from-dotenv'}\nBASE_URL=http://dotenv.example\nPORT=8123\n")
    monkeypatch.setattr(shop, "ROOT", tmp_path)
    monkeypatch.setenv("PORT", "8124")
    try:
        config = shop.make_app().config["shop"].config
    finally:
        for name in ("DATA_DIR", "BASE_URL"):  # load_dotenv wrote them into os.environ: no leak to other tests
            os.environ.pop(name, None)
    assert config.data_dir == tmp_path / "from-dotenv" and config.base_url == "http://dotenv.example"
    assert config.port == 8124
