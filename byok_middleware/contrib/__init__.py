"""Adapters for frameworks whose app-level middleware cannot see the gateway's paths.

``byok_middleware.contrib.litestar``: :class:`~byok_middleware.contrib.litestar.BYOKPlugin`
(``Litestar(plugins=[BYOKPlugin()])``) and :func:`~byok_middleware.contrib.litestar.wrap`.
"""
