"""Settings come from config.yaml's block, then TOLLGATE_* variables, then defaults,
and a mistake stops the proxy at start-up instead of turning limits off."""

from __future__ import annotations

import pytest

from tollgate_client.hook_settings import HookSettings


def test_defaults_fail_open_on_the_local_sidecar() -> None:
    s = HookSettings.load({}, env={})
    assert s.url == "http://127.0.0.1:8080" and s.fail_open is True
    assert s.virtual_key == ("key_alias", "key_hash") and s.user == ("end_user",)


def test_the_block_wins_over_the_environment_and_reads_os_environ_refs() -> None:
    env = {"TOLLGATE_URL": "http://env:1", "TOLLGATE_FAIL_OPEN": "false", "SIDECAR": "http://ref:2"}
    assert HookSettings.load({}, env=env).url == "http://env:1"
    assert HookSettings.load({}, env=env).fail_open is False
    s = HookSettings.load({"url": "os.environ/SIDECAR", "fail_open": True, "virtual_key": "team_alias"}, env=env)
    assert (s.url, s.fail_open, s.virtual_key) == ("http://ref:2", True, ("team_alias",))


def test_lists_accept_yaml_lists_commas_and_none() -> None:
    assert HookSettings.load({"virtual_key": ["team_id", "key_hash"]}, env={}).virtual_key == ("team_id", "key_hash")
    assert HookSettings.load({}, env={"TOLLGATE_USER": "none"}).user == ()
    assert HookSettings.load({}, env={"TOLLGATE_USER": "user_id, end_user"}).user == ("user_id", "end_user")


@pytest.mark.parametrize(
    "block, message",
    [
        ({"urll": "http://x"}, "unknown key"),
        ({"fail_open": "maybe"}, "expected true or false"),
        ({"virtual_key": "key_name"}, "unknown source"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"url": "127.0.0.1:8080"}, "http"),
        ({"url": "os.environ/NOPE"}, "NOPE is not set"),
    ],
)
def test_mistakes_are_refused_with_a_message_that_names_them(block: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HookSettings.load(block, env={})
