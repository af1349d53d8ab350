"""Sending a model directory to running fraudflight servers: the Flight
action `load-model` with a `LoadModel` protobuf carrying the three files, so
the server needs no access to our disk. The server checks the model (loads
it, runs its parity vectors) before it swaps, and keeps the old one if not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight


class DeployRefused(RuntimeError):
    """The server refused the model (or could not be reached); its reason is the message."""


def varint(n: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2): tag, length, bytes.
    `LoadModel` is four such fields; a protobuf runtime would be a large
    dependency for this."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def load_model_body(model_dir: Path, mode: str = "champion") -> bytes:
    """proto/fraudflight.proto `LoadModel` with model_onnx (2), model_json (3),
    parity_jsonl (4) and mode (5: "champion" or "shadow")."""
    files = [(2, "model.onnx"), (3, "model.json"), (4, "parity.jsonl")]
    body = b"".join(_field(n, (model_dir / name).read_bytes()) for n, name in files)
    return body + _field(5, mode.encode())


def deploy(endpoint: str, model_dir: Path, token: str | None = None, ca: Path | None = None,
           mode: str = "champion") -> dict[str, Any]:
    """Loads `model_dir` into the server at `endpoint` (grpc:// or grpc+tls://),
    in service (`mode` "champion") or beside the champion ("shadow");
    returns the server's answer (version, parity, line-up). Raises
    DeployRefused with the server's reason if it refuses the model."""
    kwargs: dict[str, Any] = {}
    if ca is not None:
        kwargs["tls_root_certs"] = ca.read_bytes()
    client = flight.FlightClient(endpoint, **kwargs)
    token = token or os.environ.get("FRAUDFLIGHT_TOKEN")
    headers = [(b"authorization", b"Bearer " + token.encode())] if token else []
    options = flight.FlightCallOptions(headers=headers, timeout=120)
    try:
        results = list(client.do_action(flight.Action("load-model", load_model_body(model_dir, mode)), options=options))
        return json.loads(results[0].body.to_pybytes())
    except (flight.FlightError, pa.ArrowException) as e:
        raise DeployRefused(f"{endpoint} did not take {model_dir}: {e}") from e
    finally:
        client.close()
