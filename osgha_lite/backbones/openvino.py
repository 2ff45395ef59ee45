r"""OpenVINO runtimes of the frozen backbones: image feature maps (with parallel JPEG decoding) and
text token states.

Reading order: the image runtime (:class:`OpenVinoFeatureMaps`, the shared
:func:`compile_for_cpu` and :func:`converted_model`), then the text runtime
(:class:`OpenVinoTokenStates`, :func:`mean_pool`).

Images
------

OpenVINO execution of an image network's feature maps, with parallel JPEG decoding.

The default runtime of the lite image encoder (:mod:`osgha_lite.backbones.encoders`;
``runtime="torch"`` or ``OSGHA_IMAGE_RUNTIME=torch`` selects the PyTorch
loop). This module runs the frozen weights through OpenVINO's CPU runtime,
which fuses convolutions with their batch norms and activations and picks
blocked memory layouts: on two cores it computes EfficientNet-Lite0 several
times faster than the PyTorch loop (``benchmarks/bench_features.py``).

The converted graph takes the decoded pixels as ``uint8 [N, H, W, 3]`` and
computes, in float32,

.. math:: x' = (x - 255\,\mu) / (255\,\sigma), \qquad F = f(x'),

which equals the PyTorch path's :math:`(x/255 - \mu)/\sigma` up to float
rounding; it returns the feature maps :math:`F` ``[N, C, h, w]``. Pooling
stays with the caller (PyTorch, under the AVX2 kernel caps), so global and
grid features are pooled by exactly the same code as the default path.

Reproducibility (the same guarantees as the PyTorch path):

* precision is pinned to float32 (``INFERENCE_PRECISION_HINT=f32``,
  ``EXECUTION_MODE_HINT=ACCURACY``): on CPUs with bf16 or AMX units OpenVINO
  would otherwise compute in bfloat16;
* one stream and a fixed thread count (``OSGHA_THREADS``, default 2);
  the output is bit-identical with 1 and 2 threads and across runs
  (``tests/test_fast_images.py`` checks both);
* :func:`osgha_lite.runtime.portable_kernel_environment` is applied before
  OpenVINO loads, and OpenVINO's oneDNN honours ``ONEDNN_MAX_CPU_ISA=AVX2``:
  on an AVX-512 CPU every arithmetic kernel of the compiled graph is then an
  AVX2 one (``brgconv_avx2`` convolutions, ``jit_avx2`` element-wise), only
  layout reorders are generic; the test reads the compiled graph's kernels.
  OpenVINO's own reduction kernel ignores the cap, which is one more reason
  the pooling is left to PyTorch.

Features from the two runtimes differ by float rounding (about 1e-5): the
encoder's identity names the OpenVINO runtime and its version, so a feature
cache never mixes them.

Texts
-----

OpenVINO execution of a frozen BERT-style sentence encoder's token states (MiniLM).

The default runtime of the lite text encoder (:class:`osgha_lite.backbones.encoders.MiniLMEncoder`;
``runtime="torch"`` or ``OSGHA_TEXT_RUNTIME=torch`` selects PyTorch). The
tokenizer stays the sentence-transformers one; OpenVINO computes the
transformer's last hidden states :math:`h_i` for each token, and the
sentence vector is MiniLM's own mean pooling, computed here:

.. math:: m = \frac{\sum_i a_i h_i}{\sum_i a_i}, \qquad s = m / \lVert m \rVert

with :math:`a_i` the attention mask. The converted graph takes
``input_ids``, ``attention_mask`` and ``token_type_ids`` of any batch size
and length. Reproducibility settings are those of the image runtime
(:func:`compile_for_cpu` above: float32, one stream, a fixed
thread count, kernels capped at AVX2). On two cores this computes MiniLM
about twice as fast as PyTorch (``benchmarks/bench_features.py``); the token
states differ from PyTorch's by float rounding (about 5e-5), and the
encoder's identity names the runtime, so a feature cache never mixes them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from osgha_lite.atomic import check_sha256, record_sha256
from osgha_lite.runtime import DEFAULT_THREADS, portable_kernel_environment

#: Runtimes an image encoder can run on; ``"openvino"`` is the default.
IMAGE_RUNTIMES = ("torch", "openvino")

#: Environment variable that selects the image runtime when none is passed.
RUNTIME_VARIABLE = "OSGHA_IMAGE_RUNTIME"


def chosen_runtime(runtime: str | None = None, variable: str = RUNTIME_VARIABLE, kind: str = "image") -> str:
    """``runtime`` if given, else ``$<variable>``, else ``"openvino"``; refuses unknown names."""
    name = runtime or os.environ.get(variable) or "openvino"
    if name not in IMAGE_RUNTIMES:
        where = "runtime=" if runtime else f"${variable}="
        raise ValueError(f"{where}{name!r}: unknown {kind} runtime; choose one of {', '.join(IMAGE_RUNTIMES)}")
    return name


def compile_for_cpu(model, threads: int):
    """``model`` (a converted OpenVINO model) compiled for the CPU with the reproducibility settings of the
    module docstring: float32, accuracy mode, one stream, ``threads`` threads."""
    return import_openvino().Core().compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
        "EXECUTION_MODE_HINT": "ACCURACY",
        "PERFORMANCE_HINT": "LATENCY",
    })


def import_openvino():
    """The ``openvino`` module, loaded under the portable (AVX2) kernel caps; a clear error when missing."""
    portable_kernel_environment()
    try:
        import openvino
    except ImportError as error:
        raise ImportError(
            f"the 'openvino' image runtime needs the openvino package ({error}); install it with "
            f"`pip install openvino` (or `make env`), or use runtime='torch' (OSGHA_IMAGE_RUNTIME=torch)"
        ) from None
    return openvino


def runtime_tag() -> str:
    """The runtime part of an encoder identity, e.g. ``openvino2026.4.1-f32-ir``: the version, float32,
    and networks compiled from their stored form (:func:`converted_model`)."""
    version = import_openvino().__version__.split("-")[0]
    return f"openvino{version}-f32-ir"


class _Normalised(torch.nn.Module):
    """``uint8 [N, H, W, 3]`` pixels -> ImageNet-normalised float input -> ``features(x)``."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], mean, std):
        super().__init__()
        self.features = features
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("scale", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features((pixels.permute(0, 3, 1, 2).float() - self.shift) / self.scale)


_CONVERTED: dict[str, object] = {}


def converted_model(key: str, convert: Callable[[], object], cache_dir: str | os.PathLike | None = None):
    """The OpenVINO model ``convert()`` makes, named by ``key`` (network, weights, input layout).

    Converting traces the torch network (15-35 s on two cores), so the
    result is kept for the process and on disk: ``<cache>/openvino/<digest>.xml``
    and ``.bin`` (float32 weights, never compressed to float16) with their
    SHA-256 and ``key`` in ``<digest>.json``, written last. A later process
    reads the files only after checking both hashes and the key; a missing,
    damaged or foreign file is named in a warning and converted again. The
    model is always compiled from the stored files, so features never depend
    on whether the conversion happened in this process.
    ``<cache>`` is ``cache_dir`` or :func:`osgha_lite.backbones.features.cache_root`.
    """
    if key in _CONVERTED:
        return _CONVERTED[key]
    openvino = import_openvino()
    from osgha_lite.backbones.features import CacheWarning
    from osgha_lite.paths import cache_root

    named = f"{key}|{runtime_tag()}"
    digest = hashlib.sha256(named.encode("utf-8")).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir else cache_root() / "openvino"
    files = {"xml": folder / f"{digest}.xml", "bin": folder / f"{digest}.bin"}
    meta = folder / f"{digest}.json"
    model = None
    if meta.exists():
        try:
            check_sha256(meta, named, files)
            model = openvino.Core().read_model(str(files["xml"]))
        except (ValueError, OSError, RuntimeError) as error:
            warnings.warn(f"{meta}: converted network not used ({error}); converting it again", CacheWarning,
                          stacklevel=2)
    if model is None:
        model = convert()
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{digest}."))
        try:
            openvino.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
            for kind, path in files.items():
                os.replace(staging / f"model.{kind}", path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record_sha256(meta, named, files)
        # Compile what a later process reads: the stored model computes slightly differently (about 1e-7)
        # from the one convert() returned, so features would otherwise depend on whether it was stored.
        model = openvino.Core().read_model(str(files["xml"]))
    _CONVERTED[key] = model
    return model


class OpenVinoFeatureMaps:
    """Feature maps of a frozen torch network, computed by OpenVINO on the CPU.

    Args:
        key: names the network and its weights (converted graphs are reused
            within a process under this key; conversion takes seconds).
        module: the torch network; ``features`` its method returning maps.
        image_size: the square input side.
        mean, std: per-channel normalisation of pixels scaled to [0, 1].
        threads: inference and decoding threads (default ``OSGHA_THREADS``).
    """

    def __init__(self, key: str, module: torch.nn.Module, features: Callable, image_size: int,
                 mean: Sequence[float], std: Sequence[float], threads: int | None = None):
        openvino = import_openvino()
        self.threads = int(threads or DEFAULT_THREADS)

        def convert():
            wrapper = _Normalised(features, mean, std).eval()
            example = torch.zeros(1, image_size, image_size, 3, dtype=torch.uint8)
            # OpenVINO converts through torch.jit.trace, which warns that it is deprecated on every call
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
                return openvino.convert_model(
                    wrapper, example_input=example,
                    input=[(openvino.PartialShape([-1, image_size, image_size, 3]), openvino.Type.u8)])

        model = converted_model(f"{key}:pixels{image_size}:mean{list(mean)}:std{list(std)}", convert)
        self.compiled = compile_for_cpu(model, self.threads)
        self.request = self.compiled.create_infer_request()
        self._pool = ThreadPoolExecutor(max_workers=self.threads) if self.threads > 1 else None

    def decode(self, paths: Sequence, load: Callable[[object], np.ndarray]) -> np.ndarray:
        """``load`` (a path -> ``uint8 [H, W, 3]``) over ``paths`` on the decoding threads, stacked in order.
        PIL releases the interpreter lock while it decodes, so the threads decode in parallel."""
        arrays = list(self._pool.map(load, paths)) if self._pool else [load(p) for p in paths]
        return np.stack(arrays)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """Feature maps ``float32 [N, C, h, w]`` of ``uint8 [N, H, W, 3]`` pixels."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected uint8 pixels [N, H, W, 3], got {pixels.dtype} {pixels.shape}")
        result = self.request.infer([np.ascontiguousarray(pixels)])
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32, copy=True))


# --------------------------------------------------------------------------- texts
#: Environment variable that selects the text runtime when none is passed.
TEXT_RUNTIME_VARIABLE = "OSGHA_TEXT_RUNTIME"

#: The inputs of a BERT-style encoder, in the order the converted graph takes them.
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _LastHiddenState(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit-norm mean of the token states over the real tokens (the formula above); ``[N, d]``."""
    weights = mask.to(states.dtype)[..., None]
    mean = (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


class OpenVinoTokenStates:
    """Token states ``float32 [N, L, d]`` of a Hugging Face BERT-style model, computed by OpenVINO.

    Args:
        key: names the model and its weights (the converted graph is reused
            within a process under this key; conversion takes seconds).
        model: the transformer (``sentence_transformer[0].auto_model``).
        threads: inference threads (default ``OSGHA_THREADS``).
    """

    def __init__(self, key: str, model: torch.nn.Module, threads: int | None = None):
        openvino = import_openvino()

        def convert():
            example = {name: torch.ones(2, 8, dtype=torch.long) for name in INPUTS}
            example["token_type_ids"] = torch.zeros(2, 8, dtype=torch.long)
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracing warnings about shapes and deprecations
                return openvino.convert_model(
                    _LastHiddenState(model).eval(), example_input=example,
                    input=[(name, openvino.PartialShape([-1, -1]), openvino.Type.i64) for name in INPUTS])

        self.compiled = compile_for_cpu(converted_model(f"{key}:last_hidden_state", convert),
                                        threads or DEFAULT_THREADS)
        self.request = self.compiled.create_infer_request()

    def __call__(self, features: dict) -> torch.Tensor:
        """Token states of tokenized texts (``features`` as the tokenizer returns them)."""
        missing = [name for name in ("input_ids", "attention_mask") if name not in features]
        if missing:
            raise ValueError(f"tokenized features lack {missing}; got {sorted(features)}")
        ids = np.asarray(features["input_ids"], dtype=np.int64)
        inputs = [ids, np.asarray(features["attention_mask"], dtype=np.int64),
                  np.asarray(features.get("token_type_ids", np.zeros_like(ids)), dtype=np.int64)]
        result = self.request.infer([np.ascontiguousarray(x) for x in inputs])
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32, copy=True))
