"""Cloud TPU slice shapes: chips, hosts and the software version to boot, from an accelerator type.

An accelerator type is `<generation>-<size>` (`v4-8`, `v5litepod-16`). The size counts TensorCores
for the generations with two cores per chip (v2, v3, v4, v5p) and chips for the single-core ones
(v5litepod = v5e, v6e). A host (one TPU VM, one "worker" in gcloud's words) drives 4 chips, except
that single-host v5e/v6e slices put up to 8 chips on one VM. Every host of a slice runs one learner
process; the learner processes of a multi-host slice form one `jax.distributed` group.
"""

from __future__ import annotations

import dataclasses
import re

# generation -> (TensorCores per chip, chips per host of a multi-host slice, most chips on one host)
_GENERATIONS: dict[str, tuple[int, int, int]] = {
    "v2": (2, 4, 4),
    "v3": (2, 4, 4),
    "v4": (2, 4, 4),
    "v5p": (2, 4, 4),
    "v5litepod": (1, 4, 8),
    "v6e": (1, 4, 8),
}

# The TPU VM image ("software version") to boot for JAX on each generation. Our containers bring
# their own Python and libtpu, so the base images (no framework preinstalled) are the right ones.
DEFAULT_RUNTIME_VERSIONS: dict[str, str] = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}

_ACCELERATOR_TYPE = re.compile(r"^(?P<generation>[a-z0-9]+)-(?P<size>[0-9]+)$")


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """One Cloud TPU slice.

    Attributes:
      accelerator_type: the gcloud `--accelerator-type`, e.g. `v5litepod-16`.
      generation: the part before the dash, e.g. `v5litepod`.
      num_chips: TPU chips in the slice.
      chips_per_host: chips attached to each host (TPU VM).
      num_hosts: hosts (TPU VMs, gcloud "workers") in the slice; one learner process runs on each.
      runtime_version: the TPU VM software version to boot.
    """

    accelerator_type: str
    generation: str
    num_chips: int
    chips_per_host: int
    num_hosts: int
    runtime_version: str

    @property
    def is_multi_host(self) -> bool:
        """Whether the slice's learner processes form a multi-process `jax.distributed` group."""
        return self.num_hosts > 1

    @property
    def worker_ids(self) -> tuple[int, ...]:
        """The gcloud `--worker` indices of the hosts, 0 first (worker 0 hosts the Ray head)."""
        return tuple(range(self.num_hosts))

    def describe(self) -> str:
        """One line for humans, e.g. `v5litepod-16: 16 chips on 4 hosts (4 chips each), ...`."""
        host_word = "host" if self.num_hosts == 1 else "hosts"
        return (
            f"{self.accelerator_type}: {self.num_chips} chips on {self.num_hosts} {host_word} "
            f"({self.chips_per_host} chips each), TPU VM software {self.runtime_version}"
        )


def parse_accelerator_type(accelerator_type: str, runtime_version: str | None = None) -> TpuSlice:
    """The slice shape of a Cloud TPU accelerator type.

    Args:
      accelerator_type: `<generation>-<size>`, e.g. `v4-8` (4 chips, 1 host) or `v5litepod-16`
        (16 chips, 4 hosts).
      runtime_version: the TPU VM software version; None picks the generation's default.

    Returns:
      The slice's chip and host counts.

    Raises:
      ValueError: an unknown generation, or a size that is not a whole number of chips and hosts.
    """
    match = _ACCELERATOR_TYPE.match(accelerator_type)
    if match is None:
        raise ValueError(
            f"accelerator_type {accelerator_type!r} is not of the form <generation>-<size>, "
            "e.g. v4-8 or v5litepod-16"
        )
    generation, size = match["generation"], int(match["size"])
    if generation not in _GENERATIONS:
        raise ValueError(
            f"accelerator_type {accelerator_type!r}: unknown TPU generation {generation!r}; "
            f"valid generations: {', '.join(_GENERATIONS)}"
        )
    cores_per_chip, chips_per_multi_host, max_single_host_chips = _GENERATIONS[generation]
    if size <= 0 or size % cores_per_chip:
        raise ValueError(
            f"accelerator_type {accelerator_type!r}: the size of a {generation} slice counts "
            f"TensorCores ({cores_per_chip} per chip), so it must be a positive multiple of "
            f"{cores_per_chip}"
        )
    num_chips = size // cores_per_chip
    if num_chips <= max_single_host_chips:
        chips_per_host, num_hosts = num_chips, 1
    else:
        if num_chips % chips_per_multi_host:
            raise ValueError(
                f"accelerator_type {accelerator_type!r}: {num_chips} chips is not a whole number "
                f"of {chips_per_multi_host}-chip hosts"
            )
        chips_per_host, num_hosts = chips_per_multi_host, num_chips // chips_per_multi_host
    return TpuSlice(
        accelerator_type=accelerator_type,
        generation=generation,
        num_chips=num_chips,
        chips_per_host=chips_per_host,
        num_hosts=num_hosts,
        runtime_version=runtime_version or DEFAULT_RUNTIME_VERSIONS[generation],
    )
