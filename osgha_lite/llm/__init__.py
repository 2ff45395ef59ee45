"""LLM texts about the captions and images: the augmentation, its cache, and how faithful the texts are.

Everything here is this project's design (the paper gives neither its prompt
nor its model). Generation needs an Ollama server (or the stand-in server in
``tools/ollama_standin/``); the notebooks only read the cache.

Reading order
-------------
1. :mod:`~osgha_lite.llm.augment` - the design in its docstring, the run over
   a dataset split and the command (``python -m osgha_lite augment``).
2. :mod:`~osgha_lite.llm.prompt` - the versioned prompts (``prompts/*.txt``),
   parsing a reply into items and validating each item.
3. :mod:`~osgha_lite.llm.reply_check` - captions sent as data, replies screened
   for prompt injection.
4. :mod:`~osgha_lite.llm.client` - the configuration, the cache key and the
   requests of one caption.
5. :mod:`~osgha_lite.llm.hosts` - several servers at once, with failover.
6. :mod:`~osgha_lite.llm.cache` - the append-only cache on disk and its readers
   (:func:`~osgha_lite.llm.cache.load_augmentations`).
7. :mod:`~osgha_lite.llm.descriptions` - where a caption's descriptions come
   from (LLM or human captions) and how faithful they are.
"""
