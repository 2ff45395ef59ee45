"""A stand-in for an Ollama server, for development and tests where Ollama cannot run.

Not part of the ``osgha_lite`` package. It serves local GGUF models through
the subset of Ollama's HTTP API that ``osgha_lite.llm.augment`` uses, faithfully
enough that the official ``ollama`` Python client works unchanged. Inference
runs the real model, with one of two engines (``--engine``): transformers
de-quantizes the GGUF into PyTorch and a continuous-batching worker decodes
all concurrent requests together (the default), or llama.cpp (the optional
``llama-cpp-python``) runs the GGUF itself, one request at a time.

Start it (models are registered from Ollama Modelfiles)::

    python -m tools.ollama_standin.gguf_path --link data/ollama
    python -m tools.ollama_standin --model smollm2-135m=data/ollama/Modelfile.smollm2

then point clients at it with ``OLLAMA_HOST=127.0.0.1:11434``. See
``tools/ollama_standin/README.md`` for options, measured throughput and the
determinism contract.
"""
