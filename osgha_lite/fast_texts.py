r"""OpenVINO execution of a frozen BERT-style sentence encoder's token states (MiniLM).

The default runtime of the lite text encoder (:class:`osgha_lite.encoders.MiniLMEncoder`;
``runtime="torch"`` or ``OSGHA_TEXT_RUNTIME=torch`` selects PyTorch). The
tokenizer stays the sentence-transformers one; OpenVINO computes the
transformer's last hidden states :math:`h_i` for each token, and the
sentence vector is MiniLM's own mean pooling, computed here:

.. math:: m = \frac{\sum_i a_i h_i}{\sum_i a_i}, \qquad s = m / \lVert m \rVert

with :math:`a_i` the attention mask. The converted graph takes
``input_ids``, ``attention_mask`` and ``token_type_ids`` of any batch size
and length. Reproducibility settings are those of the image runtime
(:func:`osgha_lite.fast_images.compile_for_cpu`: float32, one stream, a fixed
thread count, kernels capped at AVX2). On two cores this computes MiniLM
about twice as fast as PyTorch (``benchmarks/bench_features.py``); the token
states differ from PyTorch's by float rounding (about 5e-5), and the
encoder's identity names the runtime, so a feature cache never mixes them.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from osgha_lite.fast_images import compile_for_cpu, converted_model, import_openvino
from osgha_lite.runtime import DEFAULT_THREADS

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
