"""Data: everything about samples before any model sees them.

Owns manifests (reading, validation by row and column), column decoding (inline vectors, ``.npy``
paths), media decoding (WAV -> log spectrogram, image frames), data-set layouts
(``bss build-manifest``), the sample-data builders and the tensors that training and model passes
read (``ManifestData``). May import only the ground floor (``bss_cli.artifacts``, ``schema``,
``errors``); torch is imported only by ``datasets``.
"""
