"""The engine under the workflows: training and validation loops (:mod:`.train`), one-pass evaluation
(:mod:`.evaluate`, :mod:`.metric_feed`), streaming scorer fits (:mod:`.fit`), test-time augmentation
(:mod:`.tta`), data loaders with exact resume (:mod:`.loaders`), ``torchrun`` support (:mod:`.distributed`),
the leakage guards (:mod:`.guards`), model / optimizer / loss construction (:mod:`.factory`), outlier-exposure
losses (:mod:`.oe_losses`), LR schedules, run folders and timings. Whole runs are the workflows'
(:mod:`anomalyseg.workflows`).
"""
