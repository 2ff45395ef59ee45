"""The kernel fingerprint (osgha_lite.pipeline.fingerprint): the same digests under settings that must not matter,
a named stage under a setting that changes a kernel, and clear errors for a bad reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from osgha_lite.pipeline import fingerprint
from osgha_lite.data import PROJECT_ROOT
from osgha_lite.runtime import PORTABLE_CPU_KERNELS

pytestmark = pytest.mark.skipif(not (PROJECT_ROOT / "data").exists(), reason="needs the repository layout")


def run_fingerprint(tmp_path, name: str, stages: list[str] | None = None, **settings: str):
    """The digests of a fingerprint run in a new process under the portable settings changed by ``settings``."""
    out = tmp_path / f"{name}.json"
    environment = {**os.environ, **PORTABLE_CPU_KERNELS, "OSGHA_THREADS": "2", **settings}
    command = [sys.executable, "-m", "osgha_lite", "envcheck", "--fingerprint", "--json", str(out)]
    if stages:
        command += ["--stages", *stages]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert out.exists(), done.stdout + done.stderr
    return json.loads(out.read_text()), done


def test_every_stage_is_the_same_under_settings_that_must_not_matter(tmp_path):
    """OpenBLAS core type and cache size, and NumPy without its AVX2 loops (emulating another CPU for NumPy),
    give bit-identical stages; so does a second run (run to run)."""
    reference, first = run_fingerprint(tmp_path, "portable")
    assert set(reference) == set(fingerprint.STAGES), first.stdout + first.stderr
    found, done = run_fingerprint(tmp_path, "other-cpu", OPENBLAS_CORETYPE="Zen", OPENBLAS_L2_SIZE=str(4 << 20),
                                  NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR")
    differing = [stage for stage in reference if found.get(stage) != reference[stage]]
    assert not differing, f"{differing}\n{done.stdout}{done.stderr}"
    # a caption's vector does not depend on its batch
    assert reference["text_features"] == reference["text_features_mixed"]


def test_a_changed_kernel_is_named(tmp_path):
    """MKL's automatic branch instead of COMPATIBLE changes the matrix products: the heads stage differs,
    the report names it and the command fails."""
    portable, _ = run_fingerprint(tmp_path, "portable", ["image_features", "heads"])
    changed, done = run_fingerprint(tmp_path, "mkl-auto", ["image_features", "heads"], MKL_CBWR="AUTO")
    assert changed["image_features"] == portable["image_features"]  # OpenVINO does not use MKL
    assert changed["heads"] != portable["heads"]
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"digests": portable}))
    environment = {**os.environ, **PORTABLE_CPU_KERNELS, "OSGHA_THREADS": "2", "MKL_CBWR": "AUTO"}
    done = subprocess.run([sys.executable, "-m", "osgha_lite", "envcheck", "--fingerprint", "--stages", "image_features", "heads",
                           "--reference", str(reference)], env=environment, capture_output=True, text=True,
                          timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "first differing stage: heads" in done.stdout
    assert "OK    image_features" in done.stdout and "DIFF  heads" in done.stdout


def test_digest_covers_names_shapes_and_bytes():
    a = np.arange(6, dtype=np.float32)
    assert fingerprint.digest(x=a) == fingerprint.digest(x=a.copy())
    assert fingerprint.digest(x=a) != fingerprint.digest(y=a)
    assert fingerprint.digest(x=a) != fingerprint.digest(x=a.reshape(2, 3))
    b = a.copy()
    b[3] = np.nextafter(b[3], np.float32(10))  # one ulp
    assert fingerprint.digest(x=a) != fingerprint.digest(x=b)


def test_report_names_the_first_differing_stage_and_a_batch_dependence():
    found = {"a": {"digest": "1" * 64, "seconds": 0.1}, "b": {"digest": "2" * 64, "seconds": 0.1},
             "c": {"digest": "3" * 64, "seconds": 0.1}}
    lines, differing = fingerprint.report(found, {"a": "1" * 64, "b": "0" * 64})
    assert differing == ["b", "c"]
    assert any(line.startswith("DIFF  b") for line in lines)
    texts = {"text_features": {"digest": "4" * 64, "seconds": 0}, "text_features_mixed": {"digest": "5" * 64,
                                                                                          "seconds": 0}}
    lines, differing = fingerprint.report(texts, {"text_features": "4" * 64, "text_features_mixed": "5" * 64})
    assert differing == ["text_features_mixed"] and "depends on the captions batched with it" in lines[-1]


def test_a_bad_reference_is_refused_with_its_path(tmp_path):
    broken = tmp_path / "reference.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="reference.json: cannot read"):
        fingerprint.load_reference(broken)
    broken.write_text(json.dumps({"digests": {"heads": "short"}}))
    with pytest.raises(ValueError, match="64-character"):
        fingerprint.load_reference(broken)


def test_the_committed_reference_names_every_stage():
    assert set(fingerprint.load_reference()) == set(fingerprint.STAGES)
