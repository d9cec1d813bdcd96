"""Turn settings: what of them may be shown."""

from __future__ import annotations

from workers.config import TurnConfig


def test_the_base_url_password_and_the_api_key_are_never_shown() -> None:
    cfg = TurnConfig.from_env(
        {
            "AGG_LLM_PROVIDER": "openai",
            "AGG_LLM_BASE_URL": "http://team:s3cr%40t-pass@gateway.local/v1/",
            "AGG_LLM_API_KEY": "sk-abcdef",
        }
    )
    assert cfg.shown_url == "http://team:***@gateway.local/v1"
    assert "s3cr" not in repr(cfg) and "sk-abcdef" not in repr(cfg)
    echoed = f"502 from {cfg.base_url}: bad auth s3cr%40t-pass / s3cr@t-pass, key sk-abcdef"
    assert cfg.scrub(echoed) == "502 from http://team:***@gateway.local/v1: bad auth *** / ***, key ***"
    short = TurnConfig.from_env({"AGG_LLM_PROVIDER": "openai", "AGG_LLM_BASE_URL": "http://u:pw@gw/v1"})
    assert short.scrub(f"cannot reach {short.base_url}") == "cannot reach http://u:***@gw/v1"
