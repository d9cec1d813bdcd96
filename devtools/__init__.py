"""Tools for agg's own development — never installed with agg, imported by ``tests/`` and
``scripts/`` alike so that neither imports the other.

Modules: :mod:`devtools.redisproc` (throwaway redis-server processes on unix sockets),
:mod:`devtools.cluster` (a throwaway Redis Cluster), :mod:`devtools.browser` (headless chromium
through Playwright),
:mod:`devtools.gen_corpus` (deterministic transcript corpora of any size from the shared one),
:mod:`devtools.agg` (running the real ``agg`` command against a test Redis; waiting),
:mod:`devtools.fakellm` (a local HTTP server speaking the OpenAI and Anthropic protocols, with
their failures), :mod:`devtools.turnkit` (transcripts and ``agg worker`` processes for turn tests
and the turn benchmark).
"""
