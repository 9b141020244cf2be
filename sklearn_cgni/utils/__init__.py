"""Small shared helpers (device selection, seeding, the memory allocator of CPU training)."""

from ._device import fit_seed, resolve_device, torch_seed
from ._malloc import keep_freed_memory

__all__ = ["fit_seed", "keep_freed_memory", "resolve_device", "torch_seed"]
