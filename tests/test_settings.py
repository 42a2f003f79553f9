"""Configuration: modes from keys, live-mode refusals, and the docs that list every setting."""

import os
import re

import pytest
from psycopg import conninfo

from webshop import mail
from webshop.settings import SETTINGS, ConfigError, load_config
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


def test_live_mode_refuses_another_api_base():
    """A live key sent to a stand-in: its key leaves for another server, which takes test cards as payment."""
    with pytest.raises(ConfigError, match="STRIPE_API_BASE: live mode talks to Stripe itself"):
        load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com",
                             "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": "http://127.0.0.1:12111"})


def test_live_mode_refuses_missing_webhook_secret():
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET: live mode needs"):
        load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com"})


def test_live_mode_starts_with_https_and_secret():
    config = load_config(environ={"STRIPE_SECRET_KEY": "sk_live_abc", "BASE_URL": "https://shop.example.com/",
                                  "STRIPE_WEBHOOK_SECRET": "whsec_x"})
    assert config.mode == "live" and config.secure and config.base_url == "https://shop.example.com"


@pytest.mark.parametrize("given, origin", [
    ("http://LOCALHOST:8807/", "http://localhost:8807"), ("https://Shop.Example.com:443", "https://shop.example.com"),
    ("HTTP://shop.example.com:80/", "http://shop.example.com"), ("http://[::1]:8000", "http://[::1]:8000"),
    ("https://xn--bcher-kva.Example", "https://xn--bcher-kva.example"),
])
def test_base_url_is_written_as_a_browser_writes_its_origin(given, origin):
    """The CSRF check compares a form's Origin header with BASE_URL: an uppercase host or a default port in
    BASE_URL would refuse every form."""
    assert load_config(environ={"BASE_URL": given}).base_url == origin


@pytest.mark.parametrize("host, base", [("127.0.0.1", "http://127.0.0.1:8000"), ("0.0.0.0", "http://127.0.0.1:8000"),
                                        ("::", "http://[::1]:8000"), ("::1", "http://[::1]:8000"),
                                        ("shop.lan", "http://shop.lan:8000")])
def test_without_base_url_the_shop_is_at_an_address_it_listens_on(host, base):
    """waitress listens on IPv6 only for `::`, so the default address must be [::1] there, not 127.0.0.1."""
    assert load_config(environ={"HOST": host}).base_url == base


@pytest.mark.parametrize("env, message", [
    ({"STRIPE_SECRET_KEY": "pk_test_abc"}, "STRIPE_SECRET_KEY: must start with"),
    ({"BASE_URL": "http://user:pw@shop.example.com"}, "BASE_URL: must be an origin"),
    ({"BASE_URL": "http://shop.example.com:99999"}, "BASE_URL: must be an origin"),
    ({"BASE_URL": "http://shop.example.com:0"}, "BASE_URL: must be an origin"),  # no browser can reach port 0
    ({"PORT": "eighty"}, "PORT: must be a whole number"),
    ({"PORT": "\uff19\uff10\uff15\uff16"}, "PORT: must be a whole number"),  # full-width digits
    ({"PORT": "9_056"}, "PORT: must be a whole number"), ({"THREADS": "\u0663"}, "THREADS: must be a whole number"),
    ({"STRIPE_TIMEOUT": "1_0"}, "STRIPE_TIMEOUT: must be a number"), ({"STRIPE_TIMEOUT": "nan"}, "must be a number"),
    ({"PORT": "70000"}, "PORT: must be from 1 to 65535"),
    ({"BASE_URL": "shop.example.com"}, "BASE_URL: must be an origin"),
    ({"STRIPE_WEBHOOK_SECRET": "secret"}, "STRIPE_WEBHOOK_SECRET: must start with whsec_"),
    ({"STRIPE_API_BASE": "http://127.0.0.1:12111"}, "STRIPE_API_BASE: needs a STRIPE_SECRET_KEY"),
    ({"STRIPE_TIMEOUT": "-1"}, "STRIPE_TIMEOUT: must be from"),
    ({"TRUSTED_PROXY": "not an address"}, "TRUSTED_PROXY: must be the proxy's IP address"),
    ({"TRUSTED_PROXY": "10.0.0.0/8"}, "TRUSTED_PROXY: must be the proxy's IP address"),
    ({"TRUSTED_PROXY": "*"}, "TRUSTED_PROXY: must be the proxy's IP address"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert message in e.value.message


@pytest.mark.parametrize("name", ["BASE_URL", "STRIPE_API_BASE"])
def test_a_url_with_a_password_in_it_is_refused_without_showing_it(name):
    with pytest.raises(ConfigError) as e:
        load_config(environ={name: "https://user:s3cret@stripe.example.com", "STRIPE_SECRET_KEY": "sk_test_x"})
    assert e.value.message.startswith(f"{name}: must be an origin") and "s3cret" not in e.value.message


@pytest.mark.parametrize("name, url", [
    ("BASE_URL", "http://[::1"), ("BASE_URL", "http://admin:s3cret\uff20shop.example.com"),
    ("BASE_URL", "https://admin:s3cret@shop.example.com\u2100"), ("STRIPE_API_BASE", "http://u:s3cret\uff03@x"),
])
def test_a_url_python_cannot_split_is_refused_in_one_line_without_showing_it(name, url):
    with pytest.raises(ConfigError) as e:
        load_config(environ={name: url, "STRIPE_SECRET_KEY": "sk_test_x"})
    assert e.value.message.startswith(f"{name}: must be an origin") and "s3cret" not in e.value.message


@pytest.mark.parametrize("host", ["bücher.example", "straße.example"])
def test_an_international_domain_name_must_be_written_as_browsers_send_it(host):
    """An Origin header holds the xn-- form, and Python's IDNA 2003 would make straße.example strasse.example: a host
    kept in Unicode, or guessed, refused every form with a 403."""
    with pytest.raises(ConfigError) as e:
        load_config(environ={"BASE_URL": f"https://{host}"})
    assert e.value.message == "BASE_URL: write an international domain name as browsers send it, in its xn-- form"


def test_host_may_be_written_in_brackets_as_in_a_url():
    config = load_config(environ={"HOST": "[::1]"})
    assert (config.host, config.base_url) == ("::1", "http://[::1]:8000")


@pytest.mark.parametrize("url", [
    "https://shop.example.com/store", "https://shop.example.com/?x=1", "https://shop.example.com/#top",
    "https://shop example.com", "https://shop.example.com/ path", 'https://"shop.example.com"',
    "https://shop.example.com'", "https://shop.example.com\"><script>", "ftp://shop.example.com",
    "https://shop..example.com", f"https://{'a' * 64}.example.com",  # an empty label, a label over 63 letters
])
def test_base_url_must_be_a_bare_origin(url):
    """BASE_URL goes into Stripe's redirect URLs and the CSRF Origin check: a path, spaces or quotes are refused."""
    with pytest.raises(ConfigError) as e:
        load_config(environ={"BASE_URL": url})
    assert e.value.message.startswith("BASE_URL: must be an origin")


def test_the_trusted_proxy_is_written_as_the_server_writes_a_peers_address():
    assert load_config(environ={"TRUSTED_PROXY": "0:0:0:0:0:0:0:1"}).trusted_proxy == "::1"
    assert load_config(environ={"TRUSTED_PROXY": "10.0.0.2"}).trusted_proxy == "10.0.0.2"


@pytest.mark.parametrize("host", ["bad host", "x_y", "*", "127.0.0.1:80"])
def test_a_bad_host_is_named_in_its_error_not_the_base_url_made_of_it(host):
    with pytest.raises(ConfigError) as e:
        load_config(environ={"HOST": host})
    assert e.value.message.startswith("HOST (BASE_URL is http://HOST:PORT when unset): must be")


def test_server_settings_defaults_and_limits():
    config = load_config(environ={})
    assert (config.threads, config.connection_limit, config.channel_timeout, config.checkout_limit) == (
        128, 1000, 30, 10)
    assert config.database_url == ""
    config = load_config(environ={"THREADS": "16", "CONNECTION_LIMIT": "50", "CHANNEL_TIMEOUT": "5",
                                  "CHECKOUT_LIMIT": "3"})
    assert (config.threads, config.connection_limit, config.channel_timeout, config.checkout_limit) == (16, 50, 5, 3)


@pytest.mark.parametrize("env, message", [
    ({"THREADS": "0"}, "THREADS: must be from 1 to 1024"),
    ({"THREADS": "many"}, "THREADS: must be a whole number"),
    ({"CONNECTION_LIMIT": "1"}, "CONNECTION_LIMIT: must be from 10 to 100000"),
    ({"CHANNEL_TIMEOUT": "0"}, "CHANNEL_TIMEOUT: must be from 1 to 3600"),
    ({"CHECKOUT_LIMIT": "0"}, "CHECKOUT_LIMIT: must be from 1 to 10000"),
    ({"DATABASE_URL": "mysql://shop@db/shop"}, "DATABASE_URL: must be empty (SQLite) or a postgresql:// URL"),
    ({"SMTP_URL": "smtp://mail.example.com?timeout=soon"}, "SMTP_URL: must be empty or like"),
    ({"SMTP_URL": "smtp://mail.example.com:0"}, "SMTP_URL: must be empty or like"),  # it would be sent to 587
    ({"SMTP_URL": "smtp://mail.example.com?timeout=0"}, "with no query but ?timeout=N"),
    ({"SMTP_URL": "smtp://mail.example.com?timout=5"}, "with no query but ?timeout=N"),  # a typo is not ignored
])
def test_bad_server_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert message in e.value.message


@pytest.mark.parametrize("url, seconds", [("smtp://mail.example.com", 30.0), ("smtps://h:465?timeout=5", 5.0),
                                          ("smtp://u:p@h:587?timeout=2.5", 2.5)])
def test_smtp_timeout_is_the_urls_or_30_seconds(url, seconds):
    assert mail.timeout(load_config(environ={"SMTP_URL": url})) == seconds


def test_every_wrong_value_is_named_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(environ={"PORT": "abc", "THREADS": "0", "MERCHANT_EMAIL": "bob"})
    assert e.value.message.splitlines() == [
        "PORT: must be a whole number, got 'abc'", "THREADS: must be from 1 to 1024, got '0'",
        "MERCHANT_EMAIL: must be a plain address like orders@example.com"]


def test_settings_wrong_together_are_named_together():
    """A value that is wrong alone, and the live mode's rules of several settings: one start names them all."""
    with pytest.raises(ConfigError) as e:
        load_config(environ={"STRIPE_SECRET_KEY": "sk_live_x", "BASE_URL": "http://shop.example.com",
                             "ADMIN_PASSWORD": "short", "THREADS": "abc", "STRIPE_API_BASE": "gopher://y"})
    assert [line.partition(":")[0] for line in e.value.message.splitlines()] == [
        "THREADS", "STRIPE_API_BASE", "BASE_URL", "STRIPE_WEBHOOK_SECRET", "ADMIN_PASSWORD"]


def test_a_wrong_key_is_named_alone_not_with_the_rules_of_a_mode_it_does_not_give():
    with pytest.raises(ConfigError) as e:
        load_config(environ={"STRIPE_SECRET_KEY": "pk_test_abc", "STRIPE_API_BASE": "http://127.0.0.1:12111"})
    assert [line.partition(":")[0] for line in e.value.message.splitlines()] == ["STRIPE_SECRET_KEY"]


def test_retired_settings_are_unknown():
    assert not {"WORKERS", "PIN_CPUS"} & {s.env for s in SETTINGS}
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config({"workers": 2}, environ={})


def test_a_postgresql_database_url_is_accepted_and_masked():
    config = load_config(environ={"DATABASE_URL": "postgresql://shop:hunter2@db.internal/shop"})
    assert config.database_url.startswith("postgresql://")
    assert "hunter2" not in repr(config.public()) and config.public()["DATABASE_URL"] == "set"


@pytest.mark.parametrize("password, seen", [
    ("S3cret%Pw-Horse", "Pw-Horse"),  # a % not followed by two hex digits: libpq quoted the whole token
    ("S3cret@Pw-Horse", "Pw-Horse"),  # an @: what follows it became the host name in the pool's log lines
    ("S3cret/Pw-Horse", "Pw-Horse"),  # a /: the rest became the database's name
])
def test_a_database_password_not_percent_encoded_is_refused_without_showing_it(password, seen):
    with pytest.raises(ConfigError) as e:
        load_config(environ={"DATABASE_URL": f"postgresql://shop:{password}@127.0.0.1:5432/shop"})
    assert "DATABASE_URL" in e.value.message and "%40" in e.value.message and seen not in e.value.message
    encoded = password.replace("%", "%25").replace("@", "%40").replace("/", "%2F")
    assert load_config(environ={"DATABASE_URL": f"postgresql://shop:{encoded}@127.0.0.1:5432/shop"}).database_url


@pytest.mark.parametrize("password", ["Tr0ub4dor#3", "ab?cd", "x[1]y", "semi;colon"])
def test_a_database_password_libpq_reads_as_written_is_accepted_as_it_is(password):
    url = f"postgresql://shop:{password}@127.0.0.1:5432/shop"
    assert conninfo.conninfo_to_dict(url)["password"] == password  # what the connection library makes of it
    assert load_config(environ={"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", [
    "postgresql://127.0.0.1?user=shop@tenant&password=S3cretPw",  # libpq: host "tenant&password=S3cretPw"
    "postgresql://shop:x/?host=evil@127.0.0.1:5432/shop",  # libpq: port "x", host "evil@127.0.0.1:5432/shop"
    "postgresql://shop:123/abc@127.0.0.1/shop",  # libpq: port 123, database "abc@127.0.0.1/shop"
    "postgresql://shop:S3cret%cdPw@127.0.0.1:5432/shop",  # a %-escape that is not UTF-8
    "postgresql://shop:S3cretPw@127.0.0.1:99999/shop",  # no such port: a pool that waits 30 s to say so
    "postgresql://shop:S3cretPw@127.0.0.1:\u00b2/shop",  # a digit to str.isdigit, not to int() or libpq
])
def test_a_database_url_libpq_would_read_otherwise_is_refused_without_a_traceback(url):
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_config(environ={"DATABASE_URL": url})


@pytest.mark.parametrize("url", ["postgresql://u:p@h?application_name=web@host1", "postgresql://h1:5432,h2:5433/db",
                                 "postgresql://[::1]:5432/db", "postgresql:///shop?host=/var/run/postgresql",
                                 "postgres://u@h/d%40b"])
def test_other_database_urls_libpq_reads_as_written_are_accepted(url):
    assert load_config(environ={"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("base_url, sender", [("https://books.example.com", "shop@books.example.com"),
                                              ("http://127.0.0.1:8000", "shop@localhost"),
                                              ("http://[::1]:8000", "shop@localhost")])
def test_the_emails_sender_defaults_to_the_shops_domain_else_localhost(base_url, sender):
    assert load_config(environ={"BASE_URL": base_url}).mail_from == sender


def test_public_view_masks_secrets():
    config = load_config(environ={"STRIPE_SECRET_KEY": "sk_test_supersecretvalue123",
                                  "STRIPE_WEBHOOK_SECRET": "whsec_topsecret"})
    for shown in (repr(config.public()), repr(config), str(config)):
        assert "supersecretvalue123" not in shown and "topsecret" not in shown
        assert "STRIPE_SECRET_KEY='set'" in shown or "'STRIPE_SECRET_KEY': 'set'" in shown


def test_every_setting_is_documented_in_env_sample_and_readme():
    sample = (ROOT / ".env.sample").read_text()
    readme = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        assert f"\n{s.env}=" in sample, s.env
        assert f"`{s.env}`" in readme, s.env
    # and the sample offers nothing the shop does not read (a retired setting would silently do nothing)
    offered = {line.split("=", 1)[0] for line in sample.splitlines() if re.match(r"[A-Z_]+=", line)}
    assert offered <= {s.env for s in SETTINGS}, offered - {s.env for s in SETTINGS}


def test_the_readme_and_env_sample_say_of_each_setting_what_python_shop_py_settings_says():
    rows = dict(re.findall(r"^\| `\w+` \| `(\w+)` \| .*? \| (.*) \|$", (ROOT / "README.md").read_text(), re.M))
    assert {s.env: s.help for s in SETTINGS} == rows
    said = {block.splitlines()[-1]: " ".join(line[2:] for line in block.splitlines()[:-1])
            for block in (ROOT / ".env.sample").read_text().strip().split("\n\n")[1:]}  # (the first: what it is)
    assert said == {f"{s.env}={s.default}": s.help for s in SETTINGS}


def test_make_app_without_config_reads_dot_env_but_the_environment_wins(tmp_path, monkeypatch, caplog):
    """gunicorn's 'shop:make_app()': .env as `python shop.py` reads it, a name there that is no setting warned of."""
    import shop
    from webshop import merchant
    env_file = tmp_path / ".env"
    env_file.write_text(f"DATA_DIR={tmp_path / 'from-dotenv'}\nBASE_URL=http://dotenv.example\nPORT=8123\n"
                        "STRIPE_SECRT_KEY=\n")
    monkeypatch.setattr(shop, "ROOT", tmp_path)
    monkeypatch.setattr(merchant, "ROOT", tmp_path)
    monkeypatch.setattr(shop, "start_background", lambda _: None)  # a server's threads: not this test's subject
    monkeypatch.setenv("PORT", "8124")
    try:
        config = shop.make_app().config["shop"].config
    finally:
        for name in ("DATA_DIR", "BASE_URL", "STRIPE_SECRT_KEY"):  # load_dotenv wrote them in os.environ: no leak
            os.environ.pop(name, None)
    assert config.data_dir == tmp_path / "from-dotenv" and config.base_url == "http://dotenv.example"
    assert config.port == 8124
    assert ".env: STRIPE_SECRT_KEY is not a setting of the shop (did you mean STRIPE_SECRET_KEY?)" in caplog.text


def test_the_readme_subscribes_the_endpoint_to_exactly_the_events_it_handles():
    from webshop.payments import EVENTS
    section = (ROOT / "README.md").read_text().split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", section)) == set(EVENTS)
