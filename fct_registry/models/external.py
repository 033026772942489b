"""An image model given from outside (``source:`` a model in params), held as one ONNX graph.

Whatever the source (an MLflow model, an ONNX or TorchScript file, a factory and its weights),
:mod:`fct_registry.registry.external` turns it into an ONNX graph with this project's image
interface: input ``images`` ``[N, C, H, W]`` in [0, 1], normalisation (``(x - mean) / std``)
inside the graph, output ``embedding`` ``[N, D]``. :class:`ExternalImageModel` holds that graph
as a ``uint8`` buffer, so it saves as ``model.safetensors`` + ``spec.json`` like every trained
model (content hash, checksums, the ``fct`` flavor) and runs with onnxruntime wherever a trained
image model runs (the version stage, ``fct embed``, ``fct backfill``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fct_registry.model_specs import ExternalSpec

GRAPH_BUFFER = "graph"


class ExternalImageModel(nn.Module):
    """Runs a stored ONNX graph (``images`` -> ``embedding``) with onnxruntime.

    On a CUDA device onnxruntime's CUDA provider is used when installed; otherwise the CPU."""

    def __init__(self, graph: bytes | torch.Tensor, input_shape: list[int], dim: int) -> None:
        super().__init__()
        data = graph if isinstance(graph, torch.Tensor) else _bytes_tensor(graph)
        self.register_buffer(GRAPH_BUFFER, data)
        self.input_shape = [int(v) for v in input_shape]
        self.dim = int(dim)
        self._sessions: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Sessions are not picklable (Ray actors, deepcopy): rebuilt on first use.
        return {**self.__dict__, "_sessions": {}}

    @property
    def onnx_bytes(self) -> bytes:
        return self.graph.detach().cpu().numpy().tobytes()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The graph's length is the model's: take the stored buffer as it is.
        key = prefix + GRAPH_BUFFER
        if key in state_dict:
            self.graph = state_dict[key].detach().clone().to(torch.uint8)
            self._sessions.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def session(self, device: torch.device) -> Any:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        key = providers[0]
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # No spin-waiting between runs: `fct embed` lists, hashes and writes between two
            # batches, and spinning intra-op threads took those cores (2-core machine, under
            # load: onnxruntime alone was faster without spinning too, at less CPU per image).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[key] = ort.InferenceSession(
                self.onnx_bytes, options, providers=providers
            )
        return self._sessions[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = images.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self._run(feed, images.device)).to(images.device)

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        """Embeddings of uint8 images ``[N, C, H, W]``: ``forward(images / 255)`` in one
        onnxruntime call, with the scaling done by NumPy (the same float32 division, so the same
        bits). ``fct embed`` calls this on CPU: torch's own ``float()`` here woke its thread
        pool beside onnxruntime's and cost a fifth of the job's time on 2 cores
        (benchmarks/bench_external.py)."""
        feed = images.detach().cpu().numpy().astype(np.float32)
        feed /= np.float32(255.0)
        return self._run(feed, images.device)

    def _run(self, feed: np.ndarray, device: torch.device) -> np.ndarray:
        session = self.session(device)
        (out,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(feed)})
        return out


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def external_spec(
    kind: str, onnx: bytes, input_shape: list[int], dim: int, preprocess: Mapping[str, Any]
) -> ExternalSpec:
    """The spec of an external image model (``kind``: embedding or side_info)."""
    width = {"embedding_dim" if kind == "embedding" else "dim": int(dim)}
    return ExternalSpec.model_validate(
        {
            "kind": kind,
            "input_shape": list(input_shape),
            "graph_bytes": len(onnx),
            "preprocess": dict(preprocess),
            **width,
        }
    )


def build_external(spec: ExternalSpec) -> ExternalImageModel:
    dim = spec.embedding_dim if spec.kind == "embedding" else spec.dim
    assert dim is not None  # external_spec sets the kind's width
    empty = torch.zeros(spec.graph_bytes, dtype=torch.uint8)
    return ExternalImageModel(empty, spec.input_shape, dim)


def preprocess_images(images: torch.Tensor, resize: int, crop: int, channels: int) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` as an external model reads them, the way ``fct embed``
    decodes image files (:mod:`fct_registry.data.decode`): ``channels`` channels (gray -> rgb
    repeats; rgb -> gray by integer luminance), shorter side shrunk to ``resize`` (bilinear,
    antialiased, on uint8; enlarged only when smaller than the crop), centre-cropped to
    ``crop``, then float in [0, 1]."""
    x = images if images.dtype == torch.uint8 else (images * 255).round().to(torch.uint8)
    if x.shape[1] != channels:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            r, g, b = x.to(torch.int32).unbind(1)
            x = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[:, None]
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels}")
    h, w = x.shape[-2:]
    if min(h, w) > resize or min(h, w) < crop:
        target = resize if min(h, w) > resize else crop
        scale = target / min(h, w)
        size = [max(crop, round(h * scale)), max(crop, round(w * scale))]
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2.functional import resize as resize_images

        x = resize_images(x.contiguous(), size, InterpolationMode.BILINEAR, antialias=True)
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[:, :, top : top + crop, left : left + crop].float().div_(255.0).contiguous()
