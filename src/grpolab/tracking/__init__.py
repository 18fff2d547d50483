"""The run directory (metrics.jsonl, summary.json, manifest.json, plots) and the logger integrations.

Modules are imported individually so that readers (``grpolab.report``) never pay for transformers or torch:
``rundir`` (file formats, RunDirectory), ``jsonfiles`` (strict JSON written atomically), ``provenance`` (git, command,
package versions and the version lock, for the manifest), ``checkpoints`` (which checkpoint a resume continues from),
``runs`` (reading run directories back), ``plots`` (matplotlib only),
``loggers`` (wandb/TensorBoard/none), ``metrics_file`` (the TrainerCallback writing ``metrics.jsonl``, imports
transformers), ``session``
(``tracked_run``, the job bracket).
"""
