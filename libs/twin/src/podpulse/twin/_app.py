"""The twin's ASGI app: public, worker-facing and management routes on one server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from podpulse.common.runpod import EndpointPatch

from ._http import ApiError, check_bearer, error_response, read_json
from ._openai_api import openai_routes
from ._platform import Platform
from ._public_api import public_routes
from ._worker_api import worker_routes
from ._worker_env import read_env_patch
from .settings import TwinSettings

__all__ = ["create_app", "serve", "serve_in_thread"]


def _management_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    check_bearer(request, platform.settings.api_key.get_secret_value())
    if request.path_params["endpoint_id"] != platform.settings.endpoint_id:
        raise ApiError(404, f"endpoint {request.path_params['endpoint_id']!r} not found")
    return platform


def _endpoint_body(platform: Platform) -> dict[str, Any]:
    return {"id": platform.settings.endpoint_id, "name": platform.settings.endpoint_id,
            **platform.scaling.to_v2()}  # fmt: skip


async def get_endpoint(request: Request) -> JSONResponse:
    """GET /v2/serverless/{id}: the endpoint's workers and scaling settings."""
    return JSONResponse(_endpoint_body(_management_platform(request)))


async def patch_endpoint(request: Request) -> JSONResponse:
    """PATCH /v2/serverless/{id}: change workers and scaling, read strictly by
    ``EndpointPatch``; a body it refuses is a 400 naming the field, the config unchanged."""
    platform = _management_platform(request)
    body = await read_json(request, 1024 * 1024)
    try:
        config = platform.scaling.patched(EndpointPatch.read(body))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    platform.update_scaling(config)
    return JSONResponse(_endpoint_body(platform))


def _env_body(platform: Platform, rolling: int) -> dict[str, Any]:
    # Names only: a value may be a token the user gave the handler.
    return {"env": sorted(platform.pool.env_overrides), "revision": platform.pool.env_revision,
            "workersToRoll": rolling}  # fmt: skip


async def get_worker_env(request: Request) -> JSONResponse:
    """GET /twin/v1/{id}/env: the names set while the twin runs, and the workers still to
    roll onto them."""
    platform = _management_platform(request)
    return JSONResponse(_env_body(platform, platform.workers_to_roll()))


async def patch_worker_env(request: Request) -> JSONResponse:
    """PATCH /twin/v1/{id}/env: change the workers' environment and roll them, as a template
    change does on RunPod (podpulse.twin._worker_env); a refused body changes nothing."""
    platform = _management_platform(request)
    body = await read_json(request, 1024 * 1024)
    try:
        changes = read_env_patch(body, kept_out=platform.pool.kept_out())
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return JSONResponse(_env_body(platform, platform.update_worker_env(changes)))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, close=exc.close)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


def create_app(settings: TwinSettings, *, worker_env: Mapping[str, str] | None = None) -> Starlette:
    """Build the app; the platform starts and stops with the app's lifespan.

    ``worker_env``: extra environment for every worker process (a handler's own settings).
    """
    env = dict(worker_env or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        platform = Platform(settings, worker_env=env)
        app.state.platform = platform
        await platform.start()
        try:
            yield
        finally:
            await platform.close()

    routes = [
        # Management first: /v2/serverless/{id} would otherwise read as an endpoint route.
        Route("/v2/serverless/{endpoint_id}", get_endpoint, methods=["GET"]),
        Route("/v2/serverless/{endpoint_id}", patch_endpoint, methods=["PATCH"]),
        # The twin's own: RunPod changes a worker's environment through its template.
        Route("/twin/v1/{endpoint_id}/env", get_worker_env, methods=["GET"]),
        Route("/twin/v1/{endpoint_id}/env", patch_worker_env, methods=["PATCH"]),
        *public_routes,
        *openai_routes,
        *worker_routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    # Starlette answers /status/ID/ with an empty 307 to /status/ID: another job's URL for a
    # job id that ends in "/", and not RunPod's JSON error. An unknown path is a JSON 404.
    app.router.redirect_slashes = False
    return app


class _TwinServer(uvicorn.Server):
    """uvicorn waits for open requests before the lifespan ends; worker long-polls would
    hold it for take_hold_s, so the platform lets them go first."""

    async def shutdown(self, sockets: Any = None) -> None:
        app = self.config.loaded_app
        if app is not None:
            platform = getattr(_unwrap(app).state, "platform", None)
            if platform is not None:
                platform.begin_shutdown()
        await super().shutdown(sockets)


def _server(settings: TwinSettings, worker_env: Mapping[str, str] | None) -> uvicorn.Server:
    return _TwinServer(
        uvicorn.Config(
            create_app(settings, worker_env=worker_env),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            # Worker long-polls sit idle for take_hold_s; keep their connections open.
            timeout_keep_alive=int(settings.take_hold_s) + 30,
            lifespan="on",
            # Parked polls are answered at shutdown, so this only bounds a stuck client.
            timeout_graceful_shutdown=max(1, round(settings.stop_grace_s)),
        )
    )


def serve(settings: TwinSettings, *, worker_env: Mapping[str, str] | None = None) -> None:
    """Run the twin in the foreground until interrupted."""
    _server(settings, worker_env).run()


@contextlib.contextmanager
def serve_in_thread(
    settings: TwinSettings, *, worker_env: Mapping[str, str] | None = None
) -> Iterator[Platform]:
    """Run the twin in a background thread; the platform is yielded for read-only use."""
    server = _server(settings, worker_env)
    thread = threading.Thread(target=server.run, name="podpulse-twin", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the twin failed to start on {settings.url}")
            threading.Event().wait(0.01)
        app = server.config.loaded_app
        # uvicorn may wrap the app in middleware; the Starlette app holds the state.
        platform: Platform = _unwrap(app).state.platform
        yield platform
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _unwrap(app: Any) -> Starlette:
    while not isinstance(app, Starlette):
        app = app.app
    return app
