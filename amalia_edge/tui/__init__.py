"""The chat TUI (``amalia-edge chat``): a Textual app over the runtime's event stream.

``app`` (state), ``screens/`` and ``widgets/`` import Textual; ``history``, ``stats``,
``i18n``, ``settings``, ``keys`` and ``model`` do not, so scripts and benchmarks can use them
without it.
"""
