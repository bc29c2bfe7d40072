"""ONNX export of our DeepSeekLM (torch's dynamo exporter) and ONNX Runtime inference, fp32 and int8.

Two things the exporter needs that training code does not: shapes that do not depend on the data (our
experts split tokens by a count known only at run time), and a plain-bool causal flag (SDPA's
`is_causal=q_len > 1` becomes a symbolic bool once the length is dynamic). `StaticExperts` computes
the same gated sum with fixed shapes, and the wrapper asks for the explicit-softmax attention path,
which masks with a tensor instead.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from dstutor.models.model import DeepSeekLM
from dstutor.models.moe import Experts


class StaticExperts(Experts):
    """Routed experts without data-dependent shapes: every expert runs on every token, unchosen ones get gate 0.

    That is E/K times the expert FLOPs (4× for the nano model's 8 experts, top-2): cheap at this size,
    and faster under ONNX Runtime than gathering per-token weights. At V3's 256 experts, top-8, it
    would be 32× — real MoE deployments keep data-dependent dispatch (custom kernels) instead.
    """

    def forward(self, x: torch.Tensor, experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        dense_gates = torch.zeros(x.shape[0], self.gate_up_proj.shape[0], dtype=gates.dtype).scatter(1, experts, gates)
        gate, up = torch.einsum("th,eoh->eto", x, self.gate_up_proj).chunk(2, dim=-1)
        out = torch.einsum("eti,ehi->eth", F.silu(gate) * up, self.down_proj)
        return torch.einsum("eth,te->th", out, dense_gates).to(x.dtype)


class LogitsOnly(nn.Module):
    """input_ids (batch, seq) → logits (batch, seq, vocab): the graph ONNX Runtime runs."""

    def __init__(self, model: DeepSeekLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, need_weights=True).logits  # the masked-softmax path: export-friendly


def exportable(model: DeepSeekLM) -> LogitsOnly:
    """A copy of the model, eval mode, experts swapped for StaticExperts (same weights, same outputs)."""
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        if type(module) is Experts:
            module.__class__ = StaticExperts
    return LogitsOnly(copied).eval()


def export_onnx(model: DeepSeekLM, path: str | Path, max_batch: int = 64, max_seq: int | None = None) -> Path:
    """Write the model as ONNX with dynamic batch and sequence dimensions; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    max_seq = max_seq or model.config.max_position_embeddings
    example = torch.randint(0, model.config.vocab_size, (2, 16))
    dims = {0: torch.export.Dim("batch", min=1, max=max_batch), 1: torch.export.Dim("seq", min=2, max=max_seq)}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    with warnings.catch_warnings():  # torch's own pytree deprecation notice, raised inside the exporter
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(exportable(model), (example,), dynamo=True, input_names=["input_ids"],
                                    output_names=["logits"], dynamic_shapes={"input_ids": dims}, verbose=False)
    program.save(str(path))
    return path


def quantize_onnx(path: str | Path, out: str | Path) -> Path:
    """ONNX Runtime's maintained dynamic int8 quantiser (weights int8, activations quantised per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is meant for CNN graphs
    try:
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(out)


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU inference session; `threads` None lets ONNX Runtime choose (all cores)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Idle worker threads otherwise spin for a while after each run, taking the cores from whatever runs
    # next: timed in turns with PyTorch, that made eager PyTorch look 3× slower than it is.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: ort.InferenceSession, input_ids: torch.Tensor) -> torch.Tensor:
    """Run the exported graph on a batch of token ids."""
    return torch.from_numpy(session.run(["logits"], {"input_ids": input_ids.numpy().astype(np.int64)})[0])


class OnnxLM:
    """An ONNX Runtime session behind the model interface that quality measurements call: `lm(ids).logits`."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session

    def __call__(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=onnx_logits(self.session, input_ids))

    def eval(self) -> "OnnxLM":
        return self
