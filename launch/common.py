"""What every cloud launcher agrees on: node roles, their environment and Ray resources, the job.

The contract between the launchers and the Ray program (`coala train --launch=ray`,
docs/architecture.md#processes-and-accelerators):

* **Learner hosts** (every host of the TPU slice) run their Ray node in the learner image and carry
  the Ray resource `coala_learner_host: 1`; the cluster's total of it is the number of learner
  processes. Only these hosts may open libtpu. On a multi-host slice they also get
  `JAX_COORDINATOR_ADDRESS` (TPU worker 0, port 8476: what JAX's own Cloud TPU detection picks), so
  the learner process of each host joins one `jax.distributed` group by calling
  `jax.distributed.initialize()`; JAX reads the process id and count from the TPU metadata. A
  single-host slice has no group and no coordinator address.
* **Actor nodes** (CPU VMs) run the actor image, whose environment has `JAX_PLATFORMS=cpu`, and
  carry `coala_actor_slot: <actors per node>`; an actor that asks for one slot lands on a CPU
  node, never on a TPU host. They never get a coordinator address: actors do not join the
  learners' group (a `jax.distributed` group fate-shares: one death kills all).
* **The driver** (`coala train`, a Ray job on the head) only builds the program graph: it runs with
  `JAX_PLATFORMS=cpu` and without `JAX_COORDINATOR_ADDRESS`, even on TPU worker 0.
* **The workdir** is `gs://<bucket>/<run name>`: Orbax writes checkpoints there through
  tensorstore, and running the same launch command again resumes from the newest one.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shlex

from launch.plan import Plan, Step
from launch.topology import TpuSlice

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where docker/Dockerfile puts the repository's files inside both images.
IMAGE_APP_DIR = "/app"

RAY_PORT = 6379
RAY_DASHBOARD_PORT = 8265
# JAX's coordinator port on Cloud TPU (jax._src.clusters.cloud_tpu_cluster.coordinator_port).
JAX_COORDINATOR_PORT = 8476

LEARNER_HOST_RESOURCE = "coala_learner_host"
ACTOR_SLOT_RESOURCE = "coala_actor_slot"
CONTAINER_NAME = "coala-ray"

LEARNER_IMAGE_NAME = "learner-tpu"
ACTOR_IMAGE_NAME = "actor-cpu"

_GCP_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9]$")


# ----- node roles -----


def learner_host_environment(coordinator_host: str | None) -> dict[str, str]:
    """Environment of the Ray node on a TPU (learner) host.

    Args:
      coordinator_host: address of TPU worker 0 on a multi-host slice (a shell expression such as
        `${HEAD_IP}` is fine); None on a single-host slice, whose one learner process needs no
        `jax.distributed` group.
    """
    environment = {"COALA_NODE_ROLE": "learner"}
    if coordinator_host is not None:
        environment["JAX_COORDINATOR_ADDRESS"] = f"{coordinator_host}:{JAX_COORDINATOR_PORT}"
    return environment


def actor_node_environment() -> dict[str, str]:
    """Environment of the Ray node on a CPU actor VM: JAX stays on the CPU and joins no group."""
    return {"COALA_NODE_ROLE": "actor", "JAX_PLATFORMS": "cpu"}


def learner_host_resources() -> dict[str, int]:
    """Custom Ray resources of each TPU host (Ray adds `TPU: <chips>` itself on a TPU VM)."""
    return {LEARNER_HOST_RESOURCE: 1}


def actor_node_resources(actors_per_node: int) -> dict[str, int]:
    """Custom Ray resources of one CPU actor node: one slot per actor it should run."""
    return {ACTOR_SLOT_RESOURCE: actors_per_node}


def ray_resources_flag(resources: dict[str, int]) -> str:
    """`--resources='{...}'` for `ray start`, quoted for bash."""
    body = ", ".join(f'"{name}": {amount}' for name, amount in resources.items())
    return "--resources=" + shlex.quote("{" + body + "}")


def env_flags(environment: dict[str, str]) -> list[str]:
    """`--env=NAME="value"` words for `docker run` (double quotes: values may use `${VAR}`)."""
    return [f'--env={name}="{value}"' for name, value in environment.items()]


def region_of_zone(zone: str) -> str:
    """`us-central2-b` -> `us-central2`."""
    return zone.rsplit("-", 1)[0]


def actor_nodes_for(num_actors: int, actors_per_node: int) -> int:
    """CPU VMs needed to give every actor a slot."""
    return math.ceil(num_actors / actors_per_node)


# ----- images and the job -----


def job_id(run_name: str) -> str:
    """The Ray job submission id of a run."""
    return f"coala-{run_name}"


@dataclasses.dataclass(frozen=True)
class Images:
    """The two images built from docker/Dockerfile and where they live (Artifact Registry)."""

    repository: str
    tag: str

    @property
    def learner(self) -> str:
        """The learner image (target `learner-tpu`), run on every TPU host."""
        return f"{self.repository}/{LEARNER_IMAGE_NAME}:{self.tag}"

    @property
    def actor(self) -> str:
        """The actor image (target `actor-cpu`), run on the CPU VMs (and the cluster's CPU head)."""
        return f"{self.repository}/{ACTOR_IMAGE_NAME}:{self.tag}"

    @property
    def registry_host(self) -> str:
        """The registry docker authenticates against, e.g. `us-central2-docker.pkg.dev`."""
        return self.repository.split("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """The `coala train --launch=ray` invocation a launcher submits.

    Attributes:
      run_name: names the Ray job (`coala-<run_name>`) and the workdir under the bucket.
      bucket: GCS bucket name (without `gs://`).
      config: config file path relative to the repository root, e.g. `configs/ipd_mixed_pool.py`.
      num_actors: actor nodes of the program graph.
      mode: `sync` or `async`.
      num_learner_processes: learner processes, one per TPU host; more than one form a
        `jax.distributed` group.
      learner_chips: TPU chips each learner process asks Ray for (all chips of its host).
      config_overrides: extra `--config.<field>=<value>` flags, passed through unchanged (after
        the launcher's own, so they win).
    """

    run_name: str
    bucket: str
    config: str
    num_actors: int
    mode: str
    num_learner_processes: int
    learner_chips: int
    config_overrides: tuple[str, ...] = ()

    @property
    def workdir(self) -> str:
        """Checkpoints and metrics: the same for every (re)launch of the run, so it resumes."""
        return f"gs://{self.bucket}/{self.run_name}"

    @property
    def job_id(self) -> str:
        """Ray job submission id: one driver per run (a resubmission replaces the earlier one)."""
        return job_id(self.run_name)

    def train_argv(self) -> list[str]:
        """`coala train ...` as run inside an image (the config path points into the image)."""
        return [
            "coala",
            "train",
            f"--config={IMAGE_APP_DIR}/{self.config}",
            f"--workdir={self.workdir}",
            "--launch=ray",
            "--ray_address=auto",
            f"--num_actors={self.num_actors}",
            f"--mode={self.mode}",
            # The learner's placement (coala_dist/config.py `distributed`): one process per TPU
            # host, each asking Ray for all of its host's chips, so Ray puts one on every host.
            "--config.distributed.learner_accelerator=tpu",
            f"--config.distributed.learner_accelerator_count={self.learner_chips}",
            f"--config.distributed.num_learner_processes={self.num_learner_processes}",
            *self.config_overrides,
        ]

    def driver_command(self) -> str:
        """The Ray job entrypoint: the driver on the CPU, outside any `jax.distributed` group."""
        driver_environment = ["env", "-u", "JAX_COORDINATOR_ADDRESS", "JAX_PLATFORMS=cpu"]
        return shlex.join([*driver_environment, *self.train_argv()])

    def submit_script(self, ray: str) -> str:
        """Bash that (re)submits the driver as the run's one Ray job.

        Args:
          ray: how to call the `ray` CLI on the head, e.g. `sudo docker exec coala-ray ray`.
        """
        job = shlex.quote(self.job_id)
        return "\n".join(
            [
                "# One driver per run: stop and forget an earlier submission of this run first",
                "# (a resubmitted run reuses the job id and resumes from the checkpoints).",
                f"{ray} job stop {job} >/dev/null 2>&1 || true",
                f"{ray} job delete {job} >/dev/null 2>&1 || true",
                f"{ray} job submit --submission-id={job} --no-wait -- \\",
                f"  {self.driver_command()}",
                f'echo "submitted Ray job {self.job_id}; workdir {self.workdir}"',
            ]
        )


# ----- steps shared by the launchers -----


def image_build_steps(images: Images, project: str) -> list[Step]:
    """Build both images from this checkout and push them (needs a local Docker engine)."""
    repository_id = images.repository.rsplit("/", 1)[-1]
    location = images.registry_host.removesuffix("-docker.pkg.dev")
    where = f"--location={location} --project={shlex.quote(project)}"
    steps = [
        Step(
            "create the Artifact Registry repository unless it exists",
            f"if ! gcloud artifacts repositories describe {repository_id} {where} "
            ">/dev/null 2>&1; then\n"
            f"  gcloud artifacts repositories create {repository_id} --repository-format=docker "
            f"{where}\n"
            "fi",
        ),
        Step(
            "let docker push to the registry",
            f"gcloud auth configure-docker {images.registry_host} --quiet",
        ),
    ]
    dockerfile = shlex.quote(os.path.join(REPO_ROOT, "docker", "Dockerfile"))
    for target, image in (("learner-tpu", images.learner), ("actor-cpu", images.actor)):
        steps.append(
            Step(
                f"build and push the {target} image",
                f"docker build --file={dockerfile} --target={target} --tag={shlex.quote(image)} "
                f"{shlex.quote(REPO_ROOT)}\n"
                f"docker push {shlex.quote(image)}",
            )
        )
    return steps


def ensure_bucket_step(job: TrainingJob, project: str, location: str) -> Step:
    """Create the workdir's bucket unless it exists; launchers never delete it."""
    bucket = f"gs://{job.bucket}"
    return Step(
        f"create the workdir bucket {bucket} unless it exists (checkpoints go to {job.workdir})",
        f"if ! gcloud storage buckets describe {bucket} --project={project} >/dev/null 2>&1; then\n"
        f"  gcloud storage buckets create {bucket} --project={project} --location={location} "
        "--uniform-bucket-level-access\n"
        "fi",
    )


def wait_for_learner_hosts_script(
    python: str, num_hosts: int, *, polls: int, poll_seconds: int
) -> str:
    """Bash that waits until `num_hosts` Ray nodes carry the learner-host resource.

    The program starts one learner process per such node, so it must see all of them when it
    starts; actor nodes may join later (their actors wait for a free slot). The script exits 1 if
    the hosts are not all there after `polls` polls `poll_seconds` apart.

    Args:
      python: how to run Python on the head, e.g. `sudo docker exec coala-ray python`.
      num_hosts: hosts of the TPU slice.
      polls: number of polls.
      poll_seconds: seconds between polls.
    """
    count = f"{python} -c " + shlex.quote(
        'import ray; ray.init(address="auto", logging_level="ERROR"); '
        f'print(int(ray.cluster_resources().get("{LEARNER_HOST_RESOURCE}", 0)))'
    )
    return f"""learner_hosts=0
for attempt in $(seq 1 {polls}); do
  learner_hosts="$({count} 2>/dev/null || echo 0)"
  if [ "$learner_hosts" -ge {num_hosts} ]; then break; fi
  echo "waiting for learner hosts to join Ray: $learner_hosts of {num_hosts} (poll $attempt)"
  sleep {poll_seconds}
done
if [ "$learner_hosts" -lt {num_hosts} ]; then
  echo "only $learner_hosts of {num_hosts} learner hosts joined Ray (see: ray status)" >&2
  exit 1
fi"""


# ----- command-line flags shared by the launchers -----


def check_gcp_name(flag: str, value: str) -> str:
    """Returns `value` if it is a valid GCP resource name (then also safe in shell words)."""
    if not _GCP_NAME.match(value):
        raise ValueError(
            f"{flag}={value!r} must be 1-40 lowercase letters, digits and hyphens, starting with a "
            "letter and not ending with a hyphen"
        )
    return value


def check_config_path(config: str) -> str:
    """Returns `config` if it is a file under configs/ (the images copy those of this checkout)."""
    normalized = os.path.normpath(config)
    if os.path.isabs(config) or not normalized.startswith("configs" + os.sep):
        raise ValueError(
            f"--config={config!r} must be a path under configs/ (the images hold those)"
        )
    if not os.path.isfile(os.path.join(REPO_ROOT, normalized)):
        raise ValueError(f"--config={config!r} does not exist in {REPO_ROOT}")
    return normalized


def split_config_overrides(extra: list[str]) -> tuple[str, ...]:
    """The `--config.<field>=<value>` flags among unparsed arguments (anything else is an error)."""
    unknown = [arg for arg in extra if not arg.startswith("--config.")]
    if unknown:
        raise ValueError(
            f"unknown arguments {unknown}; only --config.<field>=<value> flags are passed through"
        )
    return tuple(extra)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the training job and its images; shared by every launcher and sub-command."""
    add = parser.add_argument
    add("--bucket", help="GCS bucket of the workdir gs://BUCKET/RUN_NAME (gs:// optional)")
    add("--run_name", help="workdir under the bucket and Ray job id (default: --name)")
    add("--config", default="configs/ipd_mixed_pool.py", help="experiment config under configs/")
    add("--num_actors", type=int, default=8, help="actor nodes of the program graph")
    add("--actors_per_node", type=int, default=4, help="actors per CPU VM")
    add("--actor_machine_type", default="n2-standard-8", help="machine type of the actor VMs")
    add("--mode", choices=("sync", "async"), default="sync", help="actor-learner mode")
    add("--image_repository", help="images' registry (default REGION-docker.pkg.dev/PROJECT/coala)")
    add("--image_tag", default="latest", help="tag of the images to build and pull")
    add("--spot", action="store_true", help="Spot capacity: cheaper, but may be reclaimed")
    add(
        "--staging_dir", help="local directory for generated files (default /tmp/coala-launch/NAME)"
    )
    add(
        "--dry_run", action="store_true", help="print every generated file and command; run nothing"
    )


def job_from_arguments(
    args: argparse.Namespace, extra: list[str], tpu_slice: TpuSlice, *, bucket_required: bool
) -> TrainingJob | None:
    """The TrainingJob the flags describe (None without `--bucket` where none is required).

    Args:
      args: the parsed flags.
      extra: the unparsed ones (`--config.<field>=<value>` overrides).
      tpu_slice: the learner's TPU slice.
      bucket_required: whether the command needs the job (and so `--bucket`).

    Raises:
      ValueError: a flag value out of range; the message names the flag.
    """
    if args.num_actors < 1:
        raise ValueError(f"--num_actors={args.num_actors} must be at least 1")
    if args.actors_per_node < 1:
        raise ValueError(f"--actors_per_node={args.actors_per_node} must be at least 1")
    overrides = split_config_overrides(extra)
    if not args.bucket:
        if bucket_required:
            raise ValueError("--bucket is required: the workdir lives in gs://BUCKET/RUN_NAME")
        return None
    bucket = args.bucket.removeprefix("gs://").rstrip("/")
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(f"--bucket={args.bucket!r} is not a valid GCS bucket name")
    return TrainingJob(
        run_name=run_name_from_arguments(args),
        bucket=bucket,
        config=check_config_path(args.config),
        num_actors=args.num_actors,
        mode=args.mode,
        num_learner_processes=tpu_slice.num_hosts,
        learner_chips=tpu_slice.chips_per_host,
        config_overrides=overrides,
    )


def run_name_from_arguments(args: argparse.Namespace) -> str:
    """`--run_name`, defaulting to `--name` (each checked; the error names the flag given)."""
    if args.run_name:
        return check_gcp_name("--run_name", args.run_name)
    return check_gcp_name("--name", args.name)


def images_from_arguments(args: argparse.Namespace) -> Images:
    """The image references the flags describe."""
    default = f"{region_of_zone(args.zone)}-docker.pkg.dev/{args.project}/coala"
    return Images(repository=(args.image_repository or default).rstrip("/"), tag=args.image_tag)


def make_plan(launcher: str, spec, command: str, files, steps, tools) -> Plan:
    """A launcher's plan for one command. `spec` is the launcher's deployment (has `summary()`, `staging_dir`)."""
    return Plan(
        title=f"coala {launcher} launcher: {command}",
        summary=spec.summary(),
        staging_dir=spec.staging_dir,
        files=tuple(files),
        steps=tuple(steps),
        required_tools=tuple(tools),
    )


def watch_step(job: TrainingJob, logs: str, dashboard: str | None = None) -> Step:
    """Prints where to follow a submitted job: its driver log command, the Ray dashboard (if any), TensorBoard."""
    lines = [f"driver log:  {logs}"]
    if dashboard is not None:
        lines.append(f"dashboard:   {dashboard}")
    lines.append(f"TensorBoard: tensorboard --logdir={job.workdir}")
    return Step("how to watch the run", "\n".join(f"echo {shlex.quote(line)}" for line in lines))
