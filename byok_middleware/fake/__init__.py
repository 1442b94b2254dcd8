"""Internals of the fake upstream; the public entry point is :mod:`byok_middleware.testing`.

The split: :mod:`.providers` (URL prefixes, model lists, endpoint support), :mod:`.records`
(the public dataclasses), :mod:`.errors` (provider error shapes and key echoes), :mod:`.wire`
(the sans-I/O reply model), :mod:`.chat` / :mod:`.media` / :mod:`.audio` / :mod:`.anthropic` /
:mod:`.responses` (default answers), :mod:`.dispatch` (routing and scripts), :mod:`.app` (the
Starlette shell) and :mod:`.server` (uvicorn in a background thread).
"""
