"""``ManagementClient``: read and change an endpoint's scaling over RunPod REST v2.

REST v1 (``POST rest.runpod.io/v1/endpoints/{id}/update``) was retired on 2026-11-15;
only v2's ``GET``/``PATCH /serverless/{id}`` is spoken here.
"""

from __future__ import annotations

from typing import Any

import httpx

from podpulse.common.settings import (
    DEFAULT_RUNPOD_MANAGEMENT_BASE_URL as DEFAULT_MANAGEMENT_BASE_URL,
)

from ..retry import Backoff
from ._client import path_segment
from ._config import EndpointConfig
from ._http import ApiKey, HttpClientBase, Requester


class ManagementClient(HttpClientBase):
    """Async client for endpoint configuration.

    Both calls are retried on 429, 5xx and dropped connections: a GET is a read, and a
    PATCH sends the whole desired state, so applying it twice equals applying it once.
    ``api_key`` may be a callable re-read before every request, as for ``RunPodClient``.
    """

    def __init__(
        self,
        api_key: ApiKey,
        *,
        base_url: str = DEFAULT_MANAGEMENT_BASE_URL,
        client: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = Requester(
            api_key, client=client, timeout=timeout, max_retries=max_retries, backoff=backoff
        )

    def __repr__(self) -> str:
        return f"ManagementClient(base_url={self.base_url!r})"

    async def get(self, endpoint_id: str) -> EndpointConfig:
        """The endpoint's current config (``GET /serverless/{id}``)."""
        data = await self._http.request(
            "GET",
            self._url(endpoint_id),
            call="get",
            idempotent=True,
            not_found=f"unknown endpoint {endpoint_id!r}",
        )
        return EndpointConfig.from_v2(data, call="get")

    async def update(self, endpoint_id: str, config: EndpointConfig) -> EndpointConfig:
        """Apply ``config`` (``PATCH /serverless/{id}``); returns what the server now reports."""
        data = await self._http.request(
            "PATCH",
            self._url(endpoint_id),
            call="update",
            idempotent=True,
            not_found=f"unknown endpoint {endpoint_id!r}",
            body=config.to_v2(),
        )
        return EndpointConfig.from_v2(data, call="update")

    async def update_partial(self, endpoint_id: str, **changes: Any) -> EndpointConfig:
        """Change some fields: GET the config, merge, validate the result, then PATCH it.

        Nothing is sent when the merge is invalid, and nothing is written when it equals the
        current config. Changing ``scaler_type`` requires a ``scaler_value`` as well, since a
        queue delay in seconds means nothing as a request count (and vice versa).
        """
        unknown = sorted(set(changes) - set(EndpointConfig.model_fields))
        if unknown:
            known = ", ".join(EndpointConfig.model_fields)
            raise ValueError(f"unknown EndpointConfig field(s) {unknown}; known: {known}")
        current = await self.get(endpoint_id)
        if (
            "scaler_type" in changes
            and changes["scaler_type"] != current.scaler_type
            and "scaler_value" not in changes
        ):
            raise ValueError(
                f"changing scaler_type from {current.scaler_type.value} to "
                f"{changes['scaler_type']} needs a scaler_value for the new type"
            )
        merged = EndpointConfig.model_validate({**current.model_dump(), **changes})
        if merged == current:
            return current
        return await self.update(endpoint_id, merged)

    def _url(self, endpoint_id: str) -> str:
        return f"{self.base_url}/serverless/{path_segment(endpoint_id, 'endpoint_id')}"
