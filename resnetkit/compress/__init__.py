"""Compression that wraps or edits model instances, never forks the blocks: structured and unstructured pruning,
low-rank factorisation and knowledge distillation. Architecture edits are recorded (see :mod:`.surgery`) so
compressed checkpoints rebuild themselves.
"""

from .surgery import apply_surgery, record_surgery, register_op, surgery_of

__all__ = ["apply_surgery", "record_surgery", "register_op", "surgery_of"]
