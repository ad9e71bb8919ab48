"""Training engine: the loop (:mod:`.train`), checkpoints (:mod:`.checkpoint`), ``torchrun`` support
(:mod:`.distributed`), the leakage guard (:mod:`.guards`) and the ``anomalyseg train`` command (:mod:`.train_cli`).

Entry points: :func:`anomalyseg.engine.train.train` (a whole run from a :class:`~anomalyseg.config.Config`),
:func:`~anomalyseg.engine.train.train_one_epoch`, :func:`~anomalyseg.engine.train.evaluate_segmentation` and
:func:`~anomalyseg.engine.checkpoint.load_model_from_checkpoint`.
"""
