"""Secrets never reach the start log: `umsg serve` as a real process with a configuration full of
them (SMTP AUTH users, a webhook URL with `?secret=`, a relay password in a URL, the metrics
token); the log must show the settings, masked, and none of the secret values."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from serve_proc import ServeProcess

from umsg.secrets_mask import mask_secrets

SECRETS = ("hunter2-smtp-auth", "whsec-0xC0FFEE", "relay-pw-42", "metrics-tok-7", "imap-pw-9")

CONFIG = f"""
[accounts]
metrics_token = "{SECRETS[3]}"

[channels.mail]
type = "email"
domain = "support.example.test"
listen = "127.0.0.1:0"
relay = "smtp://mailer:{SECRETS[2]}@127.0.0.1:1"
imap = "imap://inbox:{SECRETS[4]}@127.0.0.1:1/INBOX"
auth_users = {{ agent = "{SECRETS[0]}" }}
enabled = true

[channels.hook]
type = "webhook"
url = "webhook+http://127.0.0.1:1/in?secret={SECRETS[1]}&timeout_seconds=5"
"""


async def test_the_start_log_shows_the_settings_with_every_secret_masked(tmp_path: Path) -> None:
    config = tmp_path / "umsg.toml"
    config.write_text(CONFIG)
    service = ServeProcess(tmp_path / "data", {"UMSG_CONFIG": str(config)})
    try:
        url = await service.start()
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        assert await service.terminate(seconds=30) == 0, service.log_tail()
        log = service.log_path.read_text()
        starting = next(line for line in log.splitlines() if "msg=starting" in line)
        # The settings are there (so the test looks at the right line), masked.
        assert "channels.mail.auth_users.agent=***" in starting
        assert 'channels.hook.url="webhook+http://127.0.0.1:1/in?secret=***&timeout_seconds=5"' in starting
        assert "channels.mail.relay=smtp://mailer:***@127.0.0.1:1" in starting
        assert "accounts.metrics_token=***" in starting
        for secret in SECRETS:
            assert secret not in log, f"{secret} is in the log"
    finally:
        await service.aclose()


def test_one_function_masks_settings_urls_tokens_and_free_text() -> None:
    token = "umsg_" + "A1b2" * 10
    assert mask_secrets({"auth_users": {"a": "x", "b": ""}, "api_key": "k", "port": 25}) == {
        "auth_users": {"a": "***", "b": ""}, "api_key": "***", "port": 25}
    assert mask_secrets({"url": "https://h.example/in?x=1&secret=s&sig=abc"}) == {
        "url": "https://h.example/in?x=1&secret=***&sig=***"}
    assert (mask_secrets("GET https://u:p@h.example/a?token=t failed")
            == "GET https://u:***@h.example/a?token=*** failed")
    assert mask_secrets(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"
    assert token not in mask_secrets(f"revoked {token} at noon")
    assert mask_secrets("https://h.example/a?page=2") == "https://h.example/a?page=2"
