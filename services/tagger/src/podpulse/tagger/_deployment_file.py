"""``podpulse.toml``: the one declarative description of a deployment.

The release record, ``podpulse endpoint apply|diff`` and ``podpulse cost`` all read it
through ``read_deployment_file``, the one validating reader: unknown keys and bad values are
a ``DeploymentFileError`` naming the key and its line, never a traceback or a silent default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.runpod._config import MAX_IDLE_TIMEOUT_S, MAX_WORKERS
from podpulse.common.settings import check_endpoint_id

__all__ = [
    "DEFAULT_FILE",
    "DeploymentFile",
    "DeploymentFileError",
    "EndpointSpec",
    "PriceSpec",
    "ScalingSpec",
    "WorkersSpec",
    "parse_deployment_file",
    "read_deployment_file",
]

DEFAULT_FILE = Path("podpulse.toml")


class _Strict(BaseModel):
    # TOML carries types: "2" is not a worker count, and a misspelt key is not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class WorkersSpec(_Strict):
    """``[endpoint.workers]``: the worker bounds and idle timeout."""

    min: Annotated[int, Field(ge=0, le=MAX_WORKERS)]
    max: Annotated[int, Field(ge=1, le=MAX_WORKERS)]
    idle_timeout_s: Annotated[int, Field(ge=1, le=MAX_IDLE_TIMEOUT_S)]

    @model_validator(mode="after")
    def _ordered(self) -> WorkersSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ScalingSpec(_Strict):
    """``[endpoint.scaling]``: QUEUE_DELAY (seconds a request may wait) or REQUEST_COUNT."""

    type: Literal["QUEUE_DELAY", "REQUEST_COUNT"]
    value: int | float

    @model_validator(mode="after")
    def _value_in_range(self) -> ScalingSpec:
        # The scaler value's range is EndpointConfig's rule; it is checked there, once.
        try:
            EndpointConfig(
                workers_min=0,
                workers_max=1,
                idle_timeout_s=1,
                scaler_type=ScalerType(self.type),
                scaler_value=self.value,
            )
        except ValidationError as exc:
            raise ValueError(_message(exc.errors(include_input=False)[0]["msg"])) from None
        return self


class EndpointSpec(_Strict):
    """``[endpoint]``: what runs where, and how it scales."""

    id: Annotated[str, AfterValidator(check_endpoint_id)]
    image: Annotated[str, Field(min_length=1, max_length=512)]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    model_size_gb: Annotated[float, Field(gt=0, le=10_000)]
    gpu: Annotated[str, Field(min_length=1, max_length=128)]
    workers: WorkersSpec
    scaling: ScalingSpec

    def config(self) -> EndpointConfig:
        """The scaling part as the management client and the twin speak it."""
        return EndpointConfig(
            workers_min=self.workers.min,
            workers_max=self.workers.max,
            idle_timeout_s=self.workers.idle_timeout_s,
            scaler_type=ScalerType(self.scaling.type),
            scaler_value=self.scaling.value,
        )


class PriceSpec(_Strict):
    """``[prices."<pool>"]``: a GPU pool's per-second rates in USD (see ``podpulse cost``)."""

    # Bounded: a rate of $1/s ($3,600 an hour) is no GPU's; a typo should not price a month.
    flex_per_s: Annotated[float, Field(gt=0, le=1)]
    active_per_s: Annotated[float, Field(gt=0, le=1)]
    gpus: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64
    )


class DeploymentFile(_Strict):
    """The whole ``podpulse.toml``."""

    endpoint: EndpointSpec
    # Optional: podpulse cost prices with RunPod's published table unless a pool is given.
    prices: dict[Annotated[str, Field(min_length=1, max_length=128)], PriceSpec] = Field(
        default_factory=dict, max_length=64
    )


class DeploymentFileError(ValueError):
    """A podpulse.toml that cannot be used; the message names the file, key and line."""


def read_deployment_file(path: Path = DEFAULT_FILE) -> DeploymentFile:
    """Read and validate ``path``; DeploymentFileError naming what is wrong (missing too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeploymentFileError(f"{path}: no such file (see docs/releases.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentFileError(f"{path}: cannot be read ({type(exc).__name__})") from None
    return parse_deployment_file(text, source=str(path))


def parse_deployment_file(text: str, *, source: str = "podpulse.toml") -> DeploymentFile:
    """Validate podpulse.toml text; DeploymentFileError naming each bad key and its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentFileError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; no podpulse.toml nests.
        raise DeploymentFileError(f"{source}: nested too deeply to be read") from None
    try:
        return DeploymentFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(str(part) for part in error["loc"])
            key = ".".join(loc) or "<file>"
            line = _line_of(text, loc)
            where = f"{key} (line {line})" if line else key
            problems.append(f"{where}: {_message(error['msg'])}")
        raise DeploymentFileError(f"{source}: " + "; ".join(problems)) from None


def _message(msg: str) -> str:
    # pydantic's own wording, minus the prefix its model validators add.
    return msg.removeprefix("Value error, ")


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """The line defining ``loc`` (a key, else its table's header); None when not found.

    tomllib keeps no positions, so the text is scanned for table headers and plain keys: the
    shapes podpulse.toml is written in. A key inside an inline table falls back to its table.
    """
    table: tuple[str, ...] = ()
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            if table == loc:
                return number
            if best is None and loc[: len(table)] == table and table:
                best = number
            continue
        key = _KEY.match(line)
        if key and (*table, key.group(1)) == loc[: len(table) + 1]:
            if len(loc) == len(table) + 1:
                return number
            best = number
    return best
