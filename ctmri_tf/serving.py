"""Clients for ctmri-tf models served by TF Serving (exports of ``python -m export.saved_model``).

:class:`RestClient` speaks TF Serving's REST API with the standard library (``urllib``) and
NumPy only::

    POST <url>/v1/models/<name>[/versions/<version>]:predict
    {"signature_name": "...", "inputs": {"image": [...], "target_domain": ["ct", ...]}}

(the "columnar" request format: one array per named input, batch first), and returns the
``outputs`` as NumPy arrays. :class:`GrpcClient` does the same over gRPC (port 8500 by default)
with ``tensorflow-serving-api``, an optional extra (``pip install 'ctmri-tf[serving]'``),
imported only when a :class:`GrpcClient` is created.

Units are those of the signatures (see ``export/signatures.py`` and ``docs/serving.md``; every
export lists them in ``assets.extra/ctmri_export.json``). The signatures take images
``(B, H, W, 1)``; :meth:`RestClient.translate`, ``segment`` and ``classify`` also take
``(B, H, W)`` slices and add the channel axis (and remove it from the image outputs). Images
in HU (CT) or MR signal (MRI) in, ``translated`` in HU or the [0, 1] scaled MR signal out,
``translated_unit`` in [-1, 1], PSNR in dB.

Every failure (HTTP 4xx/5xx, connection refused, time-out, an answer that is not TF Serving's)
raises :class:`ServingError`, whose message starts with the URL (or gRPC target) it concerns and,
for a server error, repeats TF Serving's own message (e.g. which input is missing).
"""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Mapping

import numpy as np

DEFAULT_REST_URL = "http://localhost:8501"
DEFAULT_GRPC_TARGET = "localhost:8500"
DEFAULT_SIGNATURE = "serving_default"


class ServingError(RuntimeError):
    """A request to TF Serving failed.

    Attributes:
        url: the URL (REST) or ``host:port`` target and model (gRPC) of the failed request.
        status: the HTTP status code (REST) or the gRPC status name; ``None`` when no answer came.
        detail: TF Serving's error message, or what went wrong.
    """

    def __init__(self, url: str, detail: str, status: int | str | None = None):
        self.url = url
        self.status = status
        self.detail = detail
        prefix = f"{url}: " + (f"HTTP {status}: " if isinstance(status, int) else
                               f"{status}: " if status else "")
        super().__init__(prefix + detail)


def _model_path(model: str, version: int | None) -> str:
    if not model or "/" in model or ":" in model:
        raise ValueError(f"model name {model!r} must be non-empty without '/' or ':'")
    if version is None:
        return f"v1/models/{model}"
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    return f"v1/models/{model}/versions/{int(version)}"


def _to_json(name: str, value: Any):
    """An input array as JSON: nested lists of numbers, booleans or strings (bytes decoded as
    UTF-8)."""
    array = np.asarray(value)
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8").tolist()
    if array.dtype.kind == "U":
        return array.tolist()
    if array.dtype == object:
        decode = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v),
                              otypes=[object])
        return decode(array).tolist()
    if array.dtype.kind not in "biuf":
        raise ValueError(f"input {name!r} has dtype {array.dtype}; TF Serving's JSON takes "
                         f"numbers, booleans or strings")
    return array.tolist()


def _from_json(value: Any) -> np.ndarray:
    """A JSON output as NumPy: float32 for real numbers (every ctmri-tf float output is
    float32), int64 for integers, str for strings (JSON carries no dtype)."""
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    return array


def _image_batch(image: Any) -> tuple[np.ndarray, bool]:
    """Slices ``(B, H, W)`` or ``(B, H, W, 1)`` -> float32 ``(B, H, W, 1)`` (what the signatures
    declare), and whether the channel axis was added. ``(B, H, W, 3)`` / ``(B, H, W, 5)``
    stacks (each slice with its neighbours, for a 2.5-D translation export) pass unchanged."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        return image[..., None], True
    if image.ndim == 4 and image.shape[-1] in (1, 3, 5):
        return image, False
    raise ValueError(f"image must be slices (batch, height, width) or (batch, height, width, "
                     f"1), or a 2.5-D export's stacks (batch, height, width, 3 or 5); got shape "
                     f"{image.shape}")


def _drop_channel(outputs: dict, names: tuple[str, ...], added: bool) -> dict:
    """Remove the channel axis :func:`_image_batch` added from the image outputs ``names``."""
    if added:
        for name in names:
            if name in outputs and outputs[name].ndim == 4:
                outputs[name] = outputs[name][..., 0]
    return outputs


class RestClient:
    """TF Serving's REST API (``tensorflow_model_server --rest_api_port=8501``).

    Args:
        url: the server, e.g. ``http://localhost:8501`` (scheme, host and port).
        timeout: seconds to wait for each answer.

    Example::

        client = RestClient("http://localhost:8501")
        out = client.translate("stargan", mri_slices_signal, target_domain="ct")
        out["translated"]       # (B, H, W) float32, HU
    """

    def __init__(self, url: str = DEFAULT_REST_URL, *, timeout: float = 60.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)

    def model_url(self, model: str, version: int | None = None) -> str:
        """``<url>/v1/models/<model>[/versions/<version>]``."""
        return f"{self.url}/{_model_path(model, version)}"

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as err:
            raw = err.read().decode("utf-8", errors="replace")
            try:
                detail = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                detail = raw.strip() or err.reason
            raise ServingError(url, str(detail), err.code) from None
        except urllib.error.URLError as err:
            reason = err.reason
            hint = ("; is tensorflow_model_server running with --rest_api_port on that port?"
                    if isinstance(reason, ConnectionRefusedError) else "")
            raise ServingError(url, f"cannot connect ({reason}){hint}") from None
        except (TimeoutError, socket.timeout):
            raise ServingError(url, f"no answer within {self.timeout:g} s") from None
        except ConnectionError as err:
            raise ServingError(url, f"connection failed ({err})") from None
        try:
            return json.loads(text)
        except ValueError:
            raise ServingError(url, f"the answer is not JSON: {text[:200]!r}") from None

    def predict(self, model: str, inputs: Mapping[str, Any], *,
                signature: str = DEFAULT_SIGNATURE,
                version: int | None = None) -> dict[str, np.ndarray]:
        """Call a signature of a served model.

        Args:
            model: the served model name (``<base>/<model>/`` of the export).
            inputs: ``{input name: array}``, batch first (e.g. ``{"image": (B, H, W) float32,
                "target_domain": ["ct", "mri"]}``); strings for string inputs.
            signature: the signature name (``serving_default``, ``evaluate``, ...).
            version: a specific version (the server must have it loaded); default the latest.

        Returns:
            ``{output name: array}`` (float32 / int64 / str arrays, see :func:`_from_json`).

        Raises:
            ServingError: the request failed (message starts with the URL).
            ValueError: ``inputs`` is empty or holds something JSON cannot carry.
        """
        if not inputs:
            raise ValueError("inputs is empty: give at least one named input array")
        url = f"{self.model_url(model, version)}:predict"
        body = {"signature_name": signature,
                "inputs": {name: _to_json(name, value) for name, value in inputs.items()}}
        answer = self._request(url, body)
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise ServingError(url, f"the answer has no 'outputs': {str(answer)[:200]}")
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # a signature with a single output is not named
            return {"output": _from_json(outputs)}
        return {name: _from_json(value) for name, value in outputs.items()}

    def status(self, model: str, version: int | None = None) -> dict:
        """``GET /v1/models/<model>``: the loaded versions and their state (``AVAILABLE``...)."""
        return self._request(self.model_url(model, version))

    def metadata(self, model: str, version: int | None = None) -> dict:
        """``GET /v1/models/<model>/metadata``: every signature's inputs and outputs."""
        return self._request(f"{self.model_url(model, version)}/metadata")

    # ------------------------------------------------------------------ ctmri-tf signatures
    def translate(self, model: str, image: Any, target_domain: str | list[str] | None = None,
                  *, version: int | None = None) -> dict[str, np.ndarray]:
        """Translate CT (HU) / MRI (signal) slices ``(B, H, W)`` or ``(B, H, W, 1)`` with a
        StarGAN export (give ``target_domain``, one name or one per image) or a CycleGAN export
        (leave it None). Returns ``translated`` (HU or [0, 1] scaled MR signal) and
        ``translated_unit`` ([-1, 1]) of the shape of ``image`` (a 2.5-D export: ``image`` is
        ``(B, H, W, k)`` stacks of neighbouring slices, the outputs ``(B, H, W, 1)``, the centre
        slices)."""
        image, added = _image_batch(image)
        inputs: dict[str, Any] = {"image": image}
        if target_domain is not None:
            inputs["target_domain"] = _per_image(target_domain, len(image))
        out = self.predict(model, inputs, signature="translate", version=version)
        return _drop_channel(out, ("translated", "translated_unit"), added)

    def segment(self, model: str, image: Any, modality: str | list[str], *,
                version: int | None = None) -> dict[str, np.ndarray]:
        """Body masks of slices ``(B, H, W)`` or ``(B, H, W, 1)`` in physical units with a
        segmentation export: ``mask`` uint8 (B, H, W) and ``probabilities`` float32
        (B, H, W, classes)."""
        image, _ = _image_batch(image)
        out = self.predict(model, {"image": image, "modality": _per_image(modality, len(image))},
                           signature="segment", version=version)
        out["mask"] = out["mask"].astype(np.uint8)
        return out

    def classify(self, model: str, image: Any, *,
                 version: int | None = None) -> dict[str, np.ndarray]:
        """CT or MRI? ``probabilities`` float32 (B, 2) (ct, mri) and ``label`` (B,) str, for
        slices ``(B, H, W)`` or ``(B, H, W, 1)``."""
        return self.predict(model, {"image": _image_batch(image)[0]},
                            signature="classify", version=version)


def _per_image(names: str | list[str], batch: int) -> list[str]:
    """One modality name per image: a single name is repeated over the batch."""
    if isinstance(names, str):
        return [names] * batch
    names = [str(n) for n in names]
    if len(names) != batch:
        raise ValueError(f"got {len(names)} modality names for {batch} images")
    return names


def _grpc_modules():
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as err:
        raise ImportError(
            f"the gRPC client needs the optional 'serving' extra (tensorflow-serving-api): "
            f"pip install 'ctmri-tf[serving]' ({err}); or use RestClient, which needs nothing "
            f"extra") from err
    return grpc, predict_pb2, prediction_service_pb2_grpc


class GrpcClient:
    """TF Serving's gRPC ``PredictionService`` (``tensorflow_model_server --port=8500``).

    Needs ``tensorflow-serving-api`` (``pip install 'ctmri-tf[serving]'``); creating a client
    without it raises ``ImportError`` saying so. Tensors travel as ``TensorProto`` (exact
    dtypes, faster than JSON for large batches).

    Args:
        target: ``host:port`` of the server's gRPC port.
        timeout: seconds to wait for each answer.
    """

    def __init__(self, target: str = DEFAULT_GRPC_TARGET, *, timeout: float = 60.0):
        self._grpc, self._predict_pb2, services = _grpc_modules()
        self.target = target
        self.timeout = float(timeout)
        self._channel = self._grpc.insecure_channel(target)
        self._stub = services.PredictionServiceStub(self._channel)

    def predict(self, model: str, inputs: Mapping[str, Any], *,
                signature: str = DEFAULT_SIGNATURE,
                version: int | None = None) -> dict[str, np.ndarray]:
        """As :meth:`RestClient.predict`, over gRPC; outputs keep their exact dtypes."""
        import tensorflow as tf

        if not inputs:
            raise ValueError("inputs is empty: give at least one named input array")
        where = f"grpc://{self.target}/{_model_path(model, version)}"
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, value in inputs.items():
            array = np.asarray(value)
            if array.dtype.kind == "U":
                array = array.astype(object)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as err:
            code = err.code().name if hasattr(err, "code") else None
            detail = err.details() if hasattr(err, "details") else str(err)
            raise ServingError(where, str(detail), code) from None
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()
