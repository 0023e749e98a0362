"""A local emulator of the providers' batch APIs, for offline demos and tests.

The official SDKs talk to it unmodified: only their base URL changes. Start it with
``python -m provider_emulator`` (see ``--help``) or, from Python, with
:class:`provider_emulator.launcher.Emulator`.
"""
