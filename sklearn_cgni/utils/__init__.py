"""Small shared helpers (device selection, seeding)."""

from ._device import fit_seed, resolve_device, torch_seed

__all__ = ["fit_seed", "resolve_device", "torch_seed"]
