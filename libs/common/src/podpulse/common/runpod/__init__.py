"""Clients for RunPod serverless: the job API (``RunPodClient``) and endpoint configuration
over REST v2 (``ManagementClient``). Both work the same against the local twin."""

from podpulse.common.settings import DEFAULT_RUNPOD_ENDPOINT_BASE_URL as DEFAULT_BASE_URL
from podpulse.common.settings import (
    DEFAULT_RUNPOD_MANAGEMENT_BASE_URL as DEFAULT_MANAGEMENT_BASE_URL,
)

from ..retry import Backoff, parse_retry_after
from ._client import DEFAULT_RUNSYNC_WAIT_MS, RunPodClient
from ._config import RECOMMENDED_CONFIG, EndpointConfig, EndpointPatch, ScalerType
from ._errors import (
    RunPodAuthError,
    RunPodBadRequest,
    RunPodConnectionError,
    RunPodError,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodRateLimited,
    RunPodServerError,
    RunPodTimeout,
)
from ._http import ApiKey
from ._management import ManagementClient
from ._models import (
    Health,
    Job,
    JobCounts,
    JobPolicy,
    JobStatus,
    PurgeResult,
    StreamChunk,
    StreamResult,
    WorkerCounts,
)
from ._outputs import whole_output
from ._sse import sse_data

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MANAGEMENT_BASE_URL",
    "DEFAULT_RUNSYNC_WAIT_MS",
    "RECOMMENDED_CONFIG",
    "ApiKey",
    "Backoff",
    "EndpointConfig",
    "EndpointPatch",
    "Health",
    "Job",
    "JobCounts",
    "JobPolicy",
    "JobStatus",
    "ManagementClient",
    "PurgeResult",
    "RunPodAuthError",
    "RunPodBadRequest",
    "RunPodClient",
    "RunPodConnectionError",
    "RunPodError",
    "RunPodNotFound",
    "RunPodProtocolError",
    "RunPodRateLimited",
    "RunPodServerError",
    "RunPodTimeout",
    "ScalerType",
    "StreamChunk",
    "StreamResult",
    "WorkerCounts",
    "parse_retry_after",
    "sse_data",
    "whole_output",
]
