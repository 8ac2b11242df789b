"""OTLP trace payloads, protobuf or JSON, read into one plain form the span reader judges.

Both decoders only check the wire format: a body that is not an ``ExportTraceServiceRequest``
(undecodable protobuf; JSON that breaks OTLP's JSON mapping: a wrong type, an int64 out of
range, a non-integer enum) raises ``OtlpError`` with a reason naming where, and the request
is a 400. What a well-formed span *means* (which attributes it must carry) is the span
reader's business (``_reader``), the same for both encodings.

OTLP's JSON mapping (opentelemetry-proto ``docs/specification.md``): lowerCamelCase keys,
unknown keys ignored, 64-bit integers as decimal strings or numbers, enums as integers,
hex trace ids (not read here), doubles as numbers or "NaN"/"Infinity"/"-Infinity".
Attribute values that are arrays, key-value lists or bytes are kept as ``OTHER``: no span
podpulse reads needs one, and they are not walked (so their depth costs nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
    "OTHER",
    "OtlpError",
    "RawSpan",
    "Scalar",
    "TooManySpans",
    "decode_json",
    "decode_protobuf",
]


class _Other:
    """An attribute value podpulse does not read (array, kvlist, bytes, or no value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OTHER"


OTHER: Final = _Other()
Scalar = str | int | float | bool | _Other

_STATUS_ERROR = 2
_UINT64_MAX = 2**64 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SPECIAL_DOUBLES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class OtlpError(ValueError):
    """The body is not an OTLP ExportTraceServiceRequest; the message says where and why."""


class TooManySpans(OtlpError):
    """More spans in one request than the caller's limit (a 413, not a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} spans in one request")


@dataclass(frozen=True, slots=True)
class RawSpan:
    """What the reader needs of one span, whichever encoding it came in."""

    name: str
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, Scalar]
    resource: dict[str, Scalar]


# --- protobuf ---------------------------------------------------------------------------


def _proto_attributes(kvs: Any) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for kv in kvs:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "double_value":
            out[kv.key] = value.double_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        elif which == "bool_value":
            out[kv.key] = value.bool_value
        else:
            out[kv.key] = OTHER
    return out


def decode_protobuf(body: bytes, *, max_spans: int | None = None) -> Iterator[RawSpan]:
    """The spans of a binary-protobuf ``ExportTraceServiceRequest``; TooManySpans past
    *max_spans* (counted on the message, before any span is read)."""
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpError(f"not a protobuf ExportTraceServiceRequest ({exc})") from None
    if max_spans is not None:
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if count > max_spans:
            raise TooManySpans(max_spans)
    return _proto_spans(request)


def _proto_spans(request: ExportTraceServiceRequest) -> Iterator[RawSpan]:
    for resource_spans in request.resource_spans:
        resource = _proto_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield RawSpan(
                    name=span.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    error=span.status.code == _STATUS_ERROR,
                    attributes=_proto_attributes(span.attributes),
                    resource=resource,
                )


# --- JSON -------------------------------------------------------------------------------


def decode_json(body: bytes, *, max_spans: int | None = None) -> Iterator[RawSpan]:
    """The spans of an ``ExportTraceServiceRequest`` in OTLP's JSON mapping.

    The whole body is checked before any span is returned, so a bad one rejects the request
    and counts nothing; TooManySpans as soon as a span past *max_spans* is seen.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise OtlpError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an int of too many digits
        raise OtlpError(f"not JSON ({exc})") from None
    spans: list[RawSpan] = []
    for span in _json_spans(data):
        if max_spans is not None and len(spans) >= max_spans:
            raise TooManySpans(max_spans)
        spans.append(span)
    return iter(spans)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OtlpError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _list(parent: dict[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(f"{where}.{key}: expected an array, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _json_spans(data: Any) -> Iterator[RawSpan]:
    root = _obj(data, "body")
    for i, rs_value in enumerate(_list(root, "resourceSpans", "body")):
        where = f"resourceSpans[{i}]"
        rs = _obj(rs_value, where)
        resource_obj = rs.get("resource")
        resource = (
            {}
            if resource_obj is None
            else _json_attributes(_obj(resource_obj, f"{where}.resource"), f"{where}.resource")
        )
        for j, ss_value in enumerate(_list(rs, "scopeSpans", where)):
            swhere = f"{where}.scopeSpans[{j}]"
            ss = _obj(ss_value, swhere)
            for k, span in enumerate(_list(ss, "spans", swhere)):
                yield _json_span(
                    _obj(span, f"{swhere}.spans[{k}]"), resource, f"{swhere}.spans[{k}]"
                )


def _json_span(span: dict[str, Any], resource: dict[str, Scalar], where: str) -> RawSpan:
    name = span.get("name", "")
    if not isinstance(name, str):
        raise OtlpError(f"{where}.name: expected a string, got {_kind(name)}")
    status = span.get("status")
    code = 0
    if status is not None:
        raw_code = _obj(status, f"{where}.status").get("code", 0)
        code = _json_int(raw_code, f"{where}.status.code", _INT64_MIN, _INT64_MAX, enum=True)
    start = _json_int(
        span.get("startTimeUnixNano", 0), f"{where}.startTimeUnixNano", 0, _UINT64_MAX
    )
    end = _json_int(span.get("endTimeUnixNano", 0), f"{where}.endTimeUnixNano", 0, _UINT64_MAX)
    return RawSpan(
        name=name,
        start_ns=start,
        end_ns=end,
        error=code == _STATUS_ERROR,
        attributes=_json_attributes(span, where),
        resource=resource,
    )


def _json_attributes(parent: dict[str, Any], where: str) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for n, kv in enumerate(_list(parent, "attributes", where)):
        # The common case first, without building a path string for every attribute.
        if type(kv) is dict:
            key = kv.get("key", "")
            value = kv.get("value")
            if type(key) is str and type(value) is dict and len(value) == 1:
                text = value.get("stringValue")
                if type(text) is str:
                    out[key] = text
                    continue
                number = value.get("doubleValue")
                if type(number) is float:
                    out[key] = number
                    continue
        kwhere = f"{where}.attributes[{n}]"
        checked = _obj(kv, kwhere)
        key = checked.get("key", "")
        if not isinstance(key, str):
            raise OtlpError(f"{kwhere}.key: expected a string, got {_kind(key)}")
        value = checked.get("value")
        out[key] = OTHER if value is None else _json_value(_obj(value, f"{kwhere}.value"), kwhere)
    return out


def _json_value(value: dict[str, Any], where: str) -> Scalar:
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise OtlpError(f"{where}.value.stringValue: expected a string, got {_kind(text)}")
        return text
    if "intValue" in value:
        return _json_int(value["intValue"], f"{where}.value.intValue", _INT64_MIN, _INT64_MAX)
    if "doubleValue" in value:
        return _json_double(value["doubleValue"], f"{where}.value.doubleValue")
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise OtlpError(f"{where}.value.boolValue: expected a boolean, got {_kind(flag)}")
        return flag
    return OTHER


def _json_int(value: Any, where: str, low: int, high: int, *, enum: bool = False) -> int:
    # bool is an int in Python, not in JSON; enums are plain numbers in OTLP's mapping.
    if type(value) is int:
        number = value
    elif isinstance(value, str) and not enum and value.lstrip("-").isdigit() and value.isascii():
        if len(value) > 21:
            raise OtlpError(f"{where}: integer out of range")
        number = int(value)
    elif type(value) is float and value.is_integer():
        number = int(value)
    else:
        want = "an integer" if enum else "an integer or a decimal string"
        raise OtlpError(f"{where}: expected {want}, got {_kind(value)}")
    if not low <= number <= high:
        raise OtlpError(f"{where}: integer out of range")
    return number


def _json_double(value: Any, where: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise OtlpError(f"{where}: number out of range") from None
    if isinstance(value, str) and value in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[value]
    raise OtlpError(f"{where}: expected a number, got {_kind(value)}")
