"""TRL's ``GRPOTrainer`` as grpolab runs it, and what touches the Trainer's state.

``build`` (``build_trainer``: the config and the built parts to a ready trainer), ``args`` (the ``trainer`` node as a
``GRPOConfig``), ``engines`` (distributed and generation engines, optimizer, precision), ``grpo`` (``GrpolabTrainer``,
the one module that overrides TRL's private methods) with its helpers ``tokenizer_calls``, ``dynamic_sampling``,
``scored_batches`` and ``refill_prompts``, ``resume_state`` (grpolab's state in the Trainer's checkpoints),
``preemption`` (stop with a checkpoint on a signal), ``parameter_change`` (did the weights move),
``warmstart`` (the supervised pass before GRPO), ``evaluation`` (the held-out evaluation) and ``final_model`` (the
trained policy saved at the end).
"""
