"""ONNX encoder: the sentence-transformers model as a fused, int8-quantised ONNX graph run by onnxruntime.

The graph is made on this machine from the shipped weights, never downloaded: torch's exporter writes the
transformer to ONNX (dynamic batch and sequence axes), onnxruntime's transformer optimiser fuses attention, the
embedding layer norm and GELU (not the residual adds into their layer norms: ``UNFUSED``), and onnxruntime's
dynamic quantisation turns the weights into int8, per channel. The word-embedding table stays fp32. How far
the rest goes depends on the CPU (``int8_recipe``): one with VNNI (or AMX) multiplies int8 without saturating,
so its weights use the full 8 bits and every matrix product is int8. Measured on this VNNI CPU against the
former recipe (7-bit weights, FFN output projections fp32, layer norms fused), single-threaded: 16.1 K tokens
per CPU second against 8.8 K, the same agreement with torch (mean cosine 0.994), corpus/ hybrid MRR@10 0.903
against 0.900 (torch fp32 0.899), NGINX dev set 0.786 against 0.794 (graph variants of equal agreement spread
0.786-0.795 there). Without VNNI, onnxruntime multiplies unsigned 8-bit activations by signed 8-bit weights with
an instruction that saturates at 16 bits, so signed weights would have to keep 7 bits (onnxruntime's advice), which
cost retrieval quality: corpus/ hybrid MRR@10 0.9114 against torch fp32 0.9195 with every product at 7 bits but the
FFN output projections, 0.9117 with those left fp32. So without VNNI every weight is unsigned 8-bit (``u8u8``),
which onnxruntime multiplies in 16-bit lanes that cannot saturate: 0.9200 against 0.9195, at 3.06x the LangChain
default's characters per second, measured with AVX-512 and VNNI hidden from onnxruntime (``scripts/avx2_only.c``;
see the README). Before it is cached, the int8 graph must agree with the torch model on a few probe sentences.

The graph is cached once per user and machine (``RAG_MODEL_CACHE``, by default under the user's cache directory,
shared by every data directory) in ``<cache>/<key>/``, the key a hash of the model's files, the recipe (which
follows the CPU's VNNI) and the onnxruntime version (its fusions and kernels change between versions). One process
builds while others wait on a file lock in that folder; the build is written under a temporary name and renamed, so
a killed build never leaves a broken file, and a file that still fails to load is rebuilt once.

Encoding mirrors sentence-transformers: the model's own tokenizer with its truncation (``max_seq_length``),
mean pooling over the tokens, L2 normalisation. Each text is run on its own (no padding, and a vector
that never depends on the texts embedded with it), on as many single-threaded runs at once as there are cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

BACKEND = "onnx-int8"
# with ``int8_recipe()``, part of the cache key
RECIPE = "export-eager-opset17+bert-fusion-no-skip-layer-norm+int8-per-channel/5"
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # int8 dot products that do not saturate at 8-bit weights
MODEL_FILE = "model-int8.onnx"
BUILD_INFO = "build.json"  # what the graph beside it was built from, for people looking into the cache
# the residual add and its layer norm stay two operators: fused into SkipLayerNormalization they took 27 % of a
# single-threaded run (onnxruntime 1.32), apart 7 %, so a text encodes in three quarters of the CPU time
UNFUSED = ["SkipLayerNormFusion"]
MIN_AGREEMENT = 0.98  # cosine of int8 against fp32 on the probes; below it the build is refused
PROBES = [
    "How do I invalidate entries in a Redis cache after a write?",
    "The order service writes events to an outbox table in the same transaction as the order.",
    "Calls to the card processor are retried three times with exponential backoff and jitter.",
    "A B-tree index keeps keys sorted, serving equality and range queries in logarithmic time.",
]
SKIPPED_FILES = {"README.md", ".gitattributes"}

log = logging.getLogger(__name__)


class OnnxUnavailable(RuntimeError):
    """The model cannot be run as an int8 ONNX graph (unsupported layout, failed export, broken runtime)."""


def int8_recipe(flags_given: set[str] | frozenset[str] | None = None) -> str:
    """``full-range`` (8-bit signed weights, every matrix product int8) on a CPU with VNNI; without, ``u8u8``:
    8-bit unsigned weights, whose products cannot saturate there."""
    flags = cpu_flags() if flags_given is None else flags_given
    return "full-range" if flags & VNNI_FLAGS else "u8u8"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's flags as the kernel lists them, less the AVX-512 VNNI that the CPUID instruction denies (what
    numpy's runtime dispatch read from it; onnxruntime picks its int8 kernels by CPUID too, so a hypervisor or an
    emulator that hides VNNI from programs gets the recipe for a CPU without it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the cautious recipe
        return frozenset()
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = {flag for line in lines for flag in line.split(":", 1)[1].split()}
    with contextlib.suppress(Exception):  # numpy's private table: without it, the kernel's list stands
        from numpy._core._multiarray_umath import __cpu_features__

        if __cpu_features__.get("AVX512VNNI") is False:
            flags.discard("avx512_vnni")
        if __cpu_features__.get("AVX512F") is False:
            flags -= {flag for flag in flags if flag.startswith("avx512")}
    return frozenset(flags)


def build_key() -> str:
    """What the graph depends on besides the model's files: the recipe, as this CPU runs it, and onnxruntime."""
    return f"{RECIPE}+{int8_recipe()}+onnxruntime-{_onnxruntime_version()}"


def _onnxruntime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"):
        with contextlib.suppress(PackageNotFoundError):
            return version(distribution)
    return "unknown"


def model_fingerprint(model_path: Path) -> str:
    """A hash of the model's files (weights, config, tokenizer) and of ``build_key``."""
    digest = hashlib.sha256(build_key().encode())
    for path in sorted(p for p in model_path.rglob("*") if p.is_file() and p.name not in SKIPPED_FILES):
        digest.update(path.relative_to(model_path).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:20]


def check_layout(model_path: Path) -> None:
    """Only a transformer + mean pooling (+ normalisation) model is encoded here; anything else stays on torch."""
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        raise OnnxUnavailable(f"{model_path} has no modules.json (not a sentence-transformers folder)")
    modules = json.loads(modules_file.read_text())
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(kind != "Normalize" for kind in kinds[2:]):
        raise OnnxUnavailable(f"modules {kinds} are not transformer + pooling (+ normalize)")
    if modules[0].get("path"):
        raise OnnxUnavailable("the transformer is not at the top of the model folder")
    pooling = json.loads((model_path / modules[1]["path"] / "config.json").read_text())
    modes = [key for key, value in pooling.items() if key.startswith("pooling_mode_") and value]
    if modes != ["pooling_mode_mean_tokens"]:
        raise OnnxUnavailable(f"pooling {modes} is not mean pooling")


def cached_model(model_path: Path, cache_dir: Path, max_seq_length: int) -> Path:
    """The int8 graph of ``model_path``, built into ``cache_dir`` first if it is not there yet."""
    target = cache_dir / model_fingerprint(model_path) / MODEL_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target.parent / "build.lock")):  # a second process waits for the first build
        if not target.is_file():
            for abandoned in target.parent.glob(".build-*"):  # a killed build's work (the lock is ours)
                shutil.rmtree(abandoned, ignore_errors=True)
            started = time.perf_counter()
            build(model_path, target, max_seq_length)
            seconds = time.perf_counter() - started
            (target.parent / BUILD_INFO).write_text(
                json.dumps({"model": str(model_path), "key": build_key(), "seconds": round(seconds, 1)}, indent=1)
            )
            log.info("built %s in %.1f s", target, seconds)
    return target


def build(model_path: Path, target: Path, max_seq_length: int) -> None:
    """Exports, fuses, quantises and checks the model, then renames the result to ``target``."""
    check_layout(model_path)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work, _quiet():
        work_dir = Path(work)
        reference = _export(model_path, work_dir / "fp32.onnx")
        _fuse(model_path, work_dir / "fp32.onnx", work_dir / "fused.onnx")
        _quantise(work_dir / "fused.onnx", work_dir / MODEL_FILE)
        encoder = OnnxEncoder(work_dir / MODEL_FILE, model_path, max_seq_length)
        agreement = float(np.min(np.sum(encoder.encode(PROBES) * reference, axis=1)))
        if agreement < MIN_AGREEMENT:
            raise OnnxUnavailable(f"the int8 model agrees with the original only to cosine {agreement:.3f}")
        os.replace(work_dir / MODEL_FILE, target)


def _export(model_path: Path, destination: Path) -> np.ndarray:
    """Writes the fp32 transformer to ONNX; returns the sentence-transformers vectors of the probes."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        """The transformer with three positional inputs and one output, as the exported graph has them."""

        def __init__(self) -> None:
            super().__init__()
            # eager attention exports the plain matmul/softmax pattern that onnxruntime's optimiser fuses
            self.transformer = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            (sample, sample, torch.zeros_like(sample)),
            str(destination),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    reference = SentenceTransformer(str(model_path), device="cpu")
    return reference.encode(PROBES, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _fuse(model_path: Path, source: Path, destination: Path) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((model_path / "config.json").read_text())
    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = fusions.enable_bias_skip_layer_norm = False  # see UNFUSED
    optimised = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        optimization_options=fusions,
    )
    optimised.save_model_to_file(str(destination))


def _quantise(source: Path, destination: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    full_range = int8_recipe() == "full-range"
    # the fused operators (Attention, SkipLayerNormalization) are outside shape inference's domain
    options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(
        str(source),
        str(destination),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8 if full_range else QuantType.QUInt8,
        op_types_to_quantize=["MatMul", "Attention"],  # not EmbedLayerNormalization: the embedding table stays fp32
        extra_options=options,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and quantiser warn about tracing and pre-processing; none of it concerns the user."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class OnnxEncoder:
    """Runs an exported sentence-transformers graph: tokenise, run each text, pool, normalise."""

    backend = BACKEND

    def __init__(self, graph: Path, model_path: Path, max_seq_length: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        # one thread per run, and as many runs at once as there are cores (see ``encode``)
        self.workers = len(os.sched_getaffinity(0))
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: on a machine shared with other work (chunking in this process,
        # other processes) spinning took CPU time from them and made encoding slower, not faster
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
        )
        self.inputs = {item.name for item in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.dimension = int(self.encode(["dimension probe"]).shape[1])

    @classmethod
    def load(cls, model_path: Path, cache_dir: Path, max_seq_length: int) -> OnnxEncoder:
        """The cached int8 graph (built when missing); a cached file that fails to load is rebuilt once."""
        graph = cached_model(model_path, cache_dir, max_seq_length)
        try:
            return cls(graph, model_path, max_seq_length)
        except Exception as error:
            log.info("rebuilding %s, which failed to load: %s", graph, error)
            graph.unlink(missing_ok=True)
            return cls(cached_model(model_path, cache_dir, max_seq_length), model_path, max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Normalised float32 vectors, one row per text, in the order given.

        Each text runs alone: dynamic int8 quantisation scales the activations of a whole run, so a text run in a
        batch would get a vector that depends on its neighbours (cosine down to 0.99 against the same text run
        alone), and a store ingested in two steps would not match one ingested at once. Runs go in parallel on
        single-threaded sessions, which on this 2-core machine is faster than batches on two intra-op threads.
        ``batch_size`` is how many texts each worker takes at a time."""
        encodings = self.tokenizer.encode_batch([text.strip() for text in texts], add_special_tokens=True)
        if not encodings:
            return np.empty((0, 0), dtype=np.float32)
        ids = [np.array([encoding.ids], dtype=np.int64) for encoding in encodings]
        if self.workers <= 1 or len(ids) == 1:
            return np.vstack([self._vector(row) for row in ids])
        return np.vstack(list(self._pool.map(self._vector, ids, chunksize=max(1, batch_size // 8))))

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="onnx-encode")

    def _vector(self, ids: np.ndarray) -> np.ndarray:
        """One text's vector: the mean of its token states (a text alone has no padding to mask), normalised."""
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {name: value for name, value in feeds.items() if name in self.inputs})[0]
        mean = hidden.mean(axis=1)
        return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
