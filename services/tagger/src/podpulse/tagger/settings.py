"""The tagger's settings: one typed object per concern, built once at the entry point.

Every field reads ``TAGGER_<FIELD>``. The endpoint itself (``RUNPOD_ENDPOINT_ID``,
``RUNPOD_MANAGEMENT_BASE_URL``) and its key (``RUNPOD_API_KEY``/``RUNPOD_API_KEY_FILE``) are
common settings and secrets, not the tagger's.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from podpulse.common.settings import env_settings

__all__ = ["EndpointSettings"]


class EndpointSettings(BaseSettings):
    """``podpulse endpoint``: where applied changes are kept, how long the bus is tried."""

    model_config = env_settings("TAGGER_")

    endpoint_history_file: Path = Field(
        default=Path(".podpulse/endpoint-history.jsonl"),
        description="JSON-lines history of every endpoint config change podpulse applied "
        "(podpulse endpoint history reads it).",
    )
    endpoint_publish_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries at publishing endpoint_config_changed before the command says on "
        "stderr that the event was not sent (the change itself is applied and kept).",
    )
