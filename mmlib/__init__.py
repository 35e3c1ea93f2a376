"""mmlib: the thin library behind the book *Multimodal learning with missing modalities*.

Modules, in the order data flows through them:

- :mod:`mmlib.data`     -- :class:`~mmlib.data.MultimodalDataset` and ``load_dataset(name, root)``
- :mod:`mmlib.masks`    -- missing-modality patterns as seeded presence matrices
- :mod:`mmlib.models`   -- encoders and fusion heads
- :mod:`mmlib.train`    -- one training loop (device, batching by index, validation selection)
- :mod:`mmlib.methods`  -- one file per paper method, plus ``baselines``
- :mod:`mmlib.metrics`  -- thin wrappers over scikit-learn
- :mod:`mmlib.results`  -- JSON run records -> pandas tables, the papers' numbers beside ours
- :mod:`mmlib.plots`    -- t-SNE, confusion matrices, metric-vs-missing-rate curves
- :mod:`mmlib.sweep`    -- papermill over a grid of parameters (CLI: ``mmbook``)
"""
__version__ = "0.1.0"
