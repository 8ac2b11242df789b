"""The environment of a service's process: the stack's own, less every secret it does not need.

As the twin builds its workers' environments (podpulse.twin._workers): a secret is dropped
under its name, its ``*_FILE`` name and wherever its value turns up under another name. A
service gets back exactly the secrets its row lists, then the row's own variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from podpulse.common.settings import KNOWN_SECRETS, Secret

from ._spec import ServiceSpec

__all__ = ["service_env"]


def _secret_variables(secrets: Iterable[Secret]) -> set[str]:
    return {name for secret in secrets for name in (secret.name, secret.file_variable)}


def service_env(
    spec: ServiceSpec,
    environ: Mapping[str, str],
    *,
    withheld: Iterable[str] = (),
    secrets: Iterable[Secret] = KNOWN_SECRETS,
) -> dict[str, str]:
    """*environ* without the secrets *spec* does not list (nor *withheld* names), plus its env.

    *secrets*: every secret podpulse knows of; those in ``spec.secrets`` pass through.
    """
    known = tuple(secrets)
    kept = set(spec.secrets)
    dropped = _secret_variables(s for s in known if s not in kept) | set(withheld)
    dropped_values = {v for s in known if s not in kept if (v := _value(s, environ))}
    env = {
        name: value
        for name, value in environ.items()
        if name not in dropped and value not in dropped_values
    }
    # A row's own variables are set on purpose (the twin's public key as RUNPOD_API_KEY).
    env.update(spec.env)
    return env


def _value(secret: Secret, environ: Mapping[str, str]) -> str | None:
    # The variable only: a *_FILE's contents never reach an environment, so its value
    # cannot turn up under another name there.
    return environ.get(secret.name) or None
