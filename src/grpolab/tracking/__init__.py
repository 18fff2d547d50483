"""The run directory and everything that writes, reads or shows it: written by callbacks during a job, read back by
``grpolab-report``; nothing here imports the trainer.

Modules are imported individually so that readers (``grpolab.report``) never pay for transformers or torch:
``rundir`` (file formats, ``RunDirectory``, override parsing), ``jsonfiles`` (strict JSON written atomically),
``provenance`` (git, command, package versions and the version lock, for the manifest), ``checkpoints`` (which
checkpoint of a run directory is complete and which one a resume continues from), ``processes`` (ranks, the main
process, collectives), ``session`` (``tracked_run``, the job bracket), ``metrics_file`` (the TrainerCallback writing
``metrics.jsonl``), ``loggers`` (wandb/TensorBoard/none), ``console`` and ``progress`` (what a job prints),
``runs`` (reading run directories back), ``aggregate`` (many runs into ``report.md``/``report.csv``) and ``plots``
(matplotlib only).
"""
