"""The foundation layer: errors, plugin registries, shipped-asset paths, atomic writes and weights-with-card I/O,
image/grid helpers and the static result page.

It imports nothing from ``methods``, ``metrics`` or ``benchmark`` (``tests/test_layers.py`` checks it); those
packages import from here.
"""
