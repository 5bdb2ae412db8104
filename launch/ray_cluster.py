"""Ray cluster launcher on GCP: a TPU node type for the learner, an autoscaling CPU actor group.

    python -m launch.ray_cluster COMMAND --name=NAME --project=PROJECT --zone=ZONE [flags]
                                         [--config.FIELD=VALUE ...]

Every command accepts `--dry_run`: it prints the generated cluster YAML and every ray/gcloud command
and runs nothing.

  config  write the cluster YAML (ready for `ray up`) into the staging directory.
  up      write it, `ray up` the cluster (a CPU head VM, the TPU slice, --min_actor_nodes actor VMs;
          the autoscaler adds actor VMs up to --max_actor_nodes while actors wait for a slot), then
          submit `coala train --launch=ray` with the workdir gs://BUCKET/RUN_NAME. Run it again
          after a preemption, or with a larger --num_actors: the run resumes from its newest
          checkpoint.
  run     (re)submit the training job on the running cluster; it resumes.
  down    stop the job (the learner checkpoints on SIGTERM) and `ray down` the cluster; the bucket
          is kept.

Unlike `launch.tpu`, the head is a CPU VM: Ray's GCP node provider refuses a TPU as the head node.
Node roles, their environment and their Ray resources follow `launch/common.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from typing import Any

import yaml

from launch import common
from launch.plan import GeneratedFile, Plan, Step, command_line_main
from launch.topology import TpuSlice, parse_accelerator_type

COMMANDS = ("config", "up", "run", "down")

CLUSTER_YAML = "cluster.yaml"
SUBMIT_SCRIPT = "coala-submit-training.sh"
_REMOTE_SUBMIT_SCRIPT = f"/tmp/{SUBMIT_SCRIPT}"
# Each node type's setup commands write the node role's environment here and the start commands
# source it, so `ray start`, and so every process Ray starts on the node, inherits it.
_NODE_ENV_FILE = "~/coala-node.env"
# A Deep Learning VM image with Docker, as in Ray's GCP examples (the containers bring Python, Ray).
_CPU_HOST_IMAGE = "projects/deeplearning-platform-release/global/images/family/common-cpu"
_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"
_HEAD_TYPE, _LEARNER_TYPE, _ACTOR_TYPE = "head_cpu", "learner_tpu", "actor_cpu"
# The TPU slice comes up after the head; allow 30 minutes for the autoscaler to create it.
_RAY_POLL_SECONDS, _RAY_POLLS = 20, 90


@dataclasses.dataclass(frozen=True)
class RayClusterSpec:
    """One Ray-on-GCP cluster for a run.

    Attributes:
      name: the Ray cluster name.
      project: GCP project.
      zone: zone of every node.
      slice: the TPU slice of the learner node type.
      spot: Spot TPU and actor VMs (the head stays on-demand: losing it loses the cluster).
      images: learner and actor image references.
      head_machine_type: the CPU head VM (driver, autoscaler).
      actor_machine_type: CPU actor VM type; its vCPU count comes from the name (n2-standard-8: 8).
      actors_per_node: actor slots per actor VM.
      min_actor_nodes: actor VMs kept even when idle.
      max_actor_nodes: upper bound of the autoscaling actor group.
      staging_dir: local directory for generated files.
      job: the training job (None for plans that need none).
    """

    name: str
    project: str
    zone: str
    slice: TpuSlice
    spot: bool
    images: common.Images
    head_machine_type: str
    actor_machine_type: str
    actors_per_node: int
    min_actor_nodes: int
    max_actor_nodes: int
    staging_dir: str
    job: common.TrainingJob | None

    @property
    def cluster_yaml(self) -> str:
        """The generated config's path, as a bash word."""
        return f'"$STAGING_DIR/{CLUSTER_YAML}"'

    def summary(self) -> tuple[str, ...]:
        """Comment lines at the top of every plan and of the YAML: what gets deployed where."""
        slice_ = self.slice
        if slice_.is_multi_host:
            group = (
                f"one jax.distributed group, coordinator TPU worker 0 port "
                f"{common.JAX_COORDINATOR_PORT}"
            )
        else:
            group = "single host: no jax.distributed group"
        lines = [
            f"Ray cluster {self.name} on GCP ({self.zone}); head {self.head_machine_type} "
            "(CPU, JAX_PLATFORMS=cpu)",
            f"learner node type: TPU {slice_.describe()}",
            f"learner hosts: {slice_.num_hosts}; {group}",
            f"actor node type: {self.actor_machine_type}, {self.actors_per_node} actor slots "
            f"each, autoscaling {self.min_actor_nodes}..{self.max_actor_nodes} nodes, "
            "JAX_PLATFORMS=cpu",
        ]
        if self.job is not None:
            job = self.job
            lines.append(f"actors: {job.num_actors}, mode {job.mode}, config {job.config}")
            lines.append(f"workdir: {job.workdir} (checkpoints; `up` or `run` with it resumes)")
        return tuple(lines)


def machine_vcpus(machine_type: str) -> int:
    """vCPUs of a predefined GCE machine type, from its name (`n2-standard-8` -> 8).

    Raises:
      ValueError: the name does not end in a vCPU count (custom machine types are not supported).
    """
    match = re.match(r"^[a-z0-9]+-[a-z]+-(?P<vcpus>[0-9]+)$", machine_type)
    if match is None:
        raise ValueError(
            f"--actor_machine_type={machine_type!r}: expected a predefined type, e.g. n2-standard-8"
        )
    return int(match["vcpus"])


def _with_node_env(command: str) -> str:
    """`command` run with the node role's environment exported (Ray's processes inherit it)."""
    return f"ulimit -n 65536; set -a; . {_NODE_ENV_FILE}; set +a; {command}"


def _write_node_env(environment: dict[str, str]) -> str:
    """A setup command writing the node's environment file (values may use `$(...)`)."""
    assignments = " ".join(f'"{name}={value}"' for name, value in environment.items())
    return f"printf '%s\\n' {assignments} > {_NODE_ENV_FILE}"


def _learner_environment(slice_: TpuSlice) -> dict[str, str]:
    if not slice_.is_multi_host:
        return common.learner_host_environment(None)
    # Worker 0 of this slice, read on each host from the TPU metadata exactly as JAX's Cloud TPU
    # detection does (worker-network-endpoints is `id:name:ip,...`, worker 0 first).
    worker_0_ip = (
        f"$(curl -fsS -H 'Metadata-Flavor: Google' {_METADATA_URL}/worker-network-endpoints "
        "| cut -d, -f1 | cut -d: -f3)"
    )
    return common.learner_host_environment(worker_0_ip)


def _boot_disk() -> dict[str, Any]:
    return {
        "boot": True,
        "autoDelete": True,
        "type": "PERSISTENT",
        "initializeParams": {"diskSizeGb": 100, "sourceImage": _CPU_HOST_IMAGE},
    }


def cluster_config(spec: RayClusterSpec) -> dict[str, Any]:
    """The `ray up` cluster config, a dict in the schema of Ray's `ray-schema.json`."""
    docker_login = f"gcloud auth configure-docker {spec.images.registry_host} --quiet"
    head_environment = {"COALA_NODE_ROLE": "head", "JAX_PLATFORMS": "cpu"}
    tpu_node_config: dict[str, Any] = {
        "acceleratorType": spec.slice.accelerator_type,
        "runtimeVersion": spec.slice.runtime_version,
    }
    actor_node_config: dict[str, Any] = {
        "machineType": spec.actor_machine_type,
        "disks": [_boot_disk()],
    }
    if spec.spot:
        tpu_node_config["schedulingConfig"] = {"preemptible": True}
        actor_node_config["scheduling"] = [{"preemptible": True}]
    learner_type = {
        "min_workers": 1,
        "max_workers": 1,
        # Per host: each host of a multi-host slice is a Ray node with these resources.
        "resources": {"TPU": spec.slice.chips_per_host, **common.learner_host_resources()},
        "node_config": tpu_node_config,
        "initialization_commands": [docker_login, "sudo usermod -aG docker $USER || true"],
        "worker_setup_commands": [_write_node_env(_learner_environment(spec.slice))],
        "docker": {
            "worker_image": spec.images.learner,
            # The TPU devices; on each host only the learner process opens them.
            "worker_run_options": ["--privileged", "--shm-size=32g"],
        },
    }
    actor_type = {
        "min_workers": spec.min_actor_nodes,
        "max_workers": spec.max_actor_nodes,
        "resources": {
            "CPU": machine_vcpus(spec.actor_machine_type),
            **common.actor_node_resources(spec.actors_per_node),
        },
        "node_config": actor_node_config,
        "initialization_commands": [docker_login],
        "worker_setup_commands": [_write_node_env(common.actor_node_environment())],
        "docker": {
            "worker_image": spec.images.actor,
            "worker_run_options": [
                *common.env_flags(common.actor_node_environment()),
                "--shm-size=8g",
            ],
        },
    }
    head_start = (
        f"ray start --head --port={common.RAY_PORT} --object-manager-port=8076 "
        "--autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=0.0.0.0"
    )
    worker_start = f"ray start --address=$RAY_HEAD_IP:{common.RAY_PORT} --object-manager-port=8076"
    return {
        "cluster_name": spec.name,
        # The TPU slice counts as one node for the autoscaler, however many hosts it has.
        "max_workers": 1 + spec.max_actor_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": {
            "type": "gcp",
            "region": common.region_of_zone(spec.zone),
            "availability_zone": spec.zone,
            "project_id": spec.project,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {
            "image": spec.images.actor,
            "container_name": common.CONTAINER_NAME,
            "pull_before_run": True,
            "run_options": ["--ulimit nofile=65536:65536"],
            "head_run_options": ["--shm-size=8g"],
        },
        "available_node_types": {
            _HEAD_TYPE: {
                "resources": {},
                "node_config": {"machineType": spec.head_machine_type, "disks": [_boot_disk()]},
            },
            _LEARNER_TYPE: learner_type,
            _ACTOR_TYPE: actor_type,
        },
        "head_node_type": _HEAD_TYPE,
        "initialization_commands": [docker_login],
        "setup_commands": [],
        "head_setup_commands": [
            _write_node_env(head_environment),
            # The autoscaler of a GCP head needs Google's API client; its dependencies stay pinned.
            f"pip install -c {common.IMAGE_APP_DIR}/constraints.txt google-api-python-client",
        ],
        "worker_setup_commands": [],
        "head_start_ray_commands": ["ray stop", _with_node_env(head_start)],
        "worker_start_ray_commands": ["ray stop", _with_node_env(worker_start)],
    }


def render_cluster_yaml(spec: RayClusterSpec) -> str:
    """The cluster config as YAML, under a header saying what it deploys and how to use it."""
    header_lines = (
        "Ray cluster config generated by `python -m launch.ray_cluster`.",
        *spec.summary(),
        f"Use: ray up {CLUSTER_YAML}; ray down {CLUSTER_YAML}",
    )
    header = "".join(f"# {line}\n" for line in header_lines)
    return header + yaml.safe_dump(cluster_config(spec), sort_keys=False, width=100)


def submit_script(spec: RayClusterSpec, job: common.TrainingJob) -> GeneratedFile:
    """Runs on the head (in its container): waits for the learner hosts, submits the driver."""
    num_hosts = spec.slice.num_hosts
    wait = common.wait_for_learner_hosts_script(
        "python", num_hosts, polls=_RAY_POLLS, poll_seconds=_RAY_POLL_SECONDS
    )
    content = f"""#!/usr/bin/env bash
# Runs on the Ray head: waits until the slice's {num_hosts} learner host(s) joined (the autoscaler
# creates the TPU slice after the head), then submits the driver.
set -euo pipefail
{wait}
{job.submit_script("ray")}
"""
    return GeneratedFile(SUBMIT_SCRIPT, content, "waits for the learner hosts, submits the job")


def _cluster_file(spec: RayClusterSpec) -> GeneratedFile:
    return GeneratedFile(CLUSTER_YAML, render_cluster_yaml(spec), "the Ray cluster config")


def _submit_steps(spec: RayClusterSpec) -> list[Step]:
    job = spec.job
    if job is None:
        raise ValueError("--bucket is required to submit the training job")
    logs = f'ray exec {CLUSTER_YAML} "ray job logs {job.job_id} --follow"'
    return [
        Step(
            "copy the submit script to the head",
            f'ray rsync-up {spec.cluster_yaml} "$STAGING_DIR/{SUBMIT_SCRIPT}" '
            f"{_REMOTE_SUBMIT_SCRIPT}",
        ),
        Step(
            f"submit coala train --launch=ray as Ray job {job.job_id} (workdir {job.workdir})",
            f"ray exec {spec.cluster_yaml} {shlex.quote(f'bash {_REMOTE_SUBMIT_SCRIPT}')}",
        ),
        common.watch_step(job, logs, dashboard=f"ray dashboard {CLUSTER_YAML}"),
    ]


def _plan(spec: RayClusterSpec, command: str, files, steps, tools) -> Plan:
    return common.make_plan("Ray cluster", spec, command, files, steps, tools)


def plan_config(spec: RayClusterSpec) -> Plan:
    """Only write the cluster YAML."""
    step = Step("the cluster config is written", f'echo "wrote $STAGING_DIR/{CLUSTER_YAML}"')
    return _plan(spec, "config", [_cluster_file(spec)], [step], ())


def plan_up(spec: RayClusterSpec) -> Plan:
    """Start (or update) the cluster and submit the run; rerunning it resumes."""
    job = spec.job
    if job is None:
        raise ValueError("--bucket is required for up")
    steps = [
        common.ensure_bucket_step(job, spec.project, common.region_of_zone(spec.zone)),
        Step(
            "start (or update) the cluster: head, TPU learner slice, minimum actor VMs",
            f"ray up --yes --no-config-cache {spec.cluster_yaml}",
        ),
        *_submit_steps(spec),
    ]
    files = [_cluster_file(spec), submit_script(spec, job)]
    return _plan(spec, "up", files, steps, ("ray", "gcloud"))


def plan_run(spec: RayClusterSpec) -> Plan:
    """(Re)submit the job on the running cluster; it resumes from the workdir."""
    if spec.job is None:
        raise ValueError("--bucket is required for run")
    files = [_cluster_file(spec), submit_script(spec, spec.job)]
    title = "run (resumes from the newest checkpoint in the workdir)"
    return _plan(spec, title, files, _submit_steps(spec), ("ray",))


def plan_down(spec: RayClusterSpec, run_name: str) -> Plan:
    """Stop the job and delete the cluster's nodes; keep the bucket."""
    stop = f"ray job stop {common.job_id(run_name)}"
    steps = [
        Step(
            "stop the training job (SIGTERM: the learner writes a last checkpoint)",
            f"ray exec {spec.cluster_yaml} {shlex.quote(stop)} || true",
        ),
        Step("delete every node of the cluster", f"ray down --yes {spec.cluster_yaml}"),
        Step(
            "the workdir is kept",
            "echo 'the bucket and its checkpoints are kept: up with the same flags resumes'",
        ),
    ]
    return _plan(spec, "down", [_cluster_file(spec)], steps, ("ray",))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launch.ray_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Unrecognised --config.FIELD=VALUE flags are passed on to `coala train`.",
    )
    add = parser.add_argument
    add("command", choices=COMMANDS)
    add("--name", required=True, help="Ray cluster name (default run name)")
    add("--project", required=True, help="GCP project")
    add("--zone", required=True, help="zone with TPU capacity for --accelerator_type")
    add("--accelerator_type", default="v4-8", help="v4-8 (1 host), v5litepod-16 (4 hosts), ...")
    add("--runtime_version", help="TPU VM software version (default: the generation's base)")
    add("--head_machine_type", default="n2-standard-8", help="CPU head VM type")
    add("--min_actor_nodes", type=int, default=0, help="actor VMs kept when idle")
    add("--max_actor_nodes", type=int, help="actor group bound (default: enough for --num_actors)")
    common.add_job_arguments(parser)
    return parser


def spec_from_arguments(
    args: argparse.Namespace, tpu_slice: TpuSlice, job: common.TrainingJob | None
) -> RayClusterSpec:
    """The cluster the parsed flags describe (ValueError names a bad flag)."""
    needed = common.actor_nodes_for(args.num_actors, args.actors_per_node)
    max_actor_nodes = needed if args.max_actor_nodes is None else args.max_actor_nodes
    if args.min_actor_nodes < 0:
        raise ValueError(f"--min_actor_nodes={args.min_actor_nodes} must be at least 0")
    if max_actor_nodes < max(1, args.min_actor_nodes):
        raise ValueError(
            f"--max_actor_nodes={max_actor_nodes} must be at least 1 and at least "
            f"--min_actor_nodes={args.min_actor_nodes}"
        )
    machine_vcpus(args.actor_machine_type)  # reject a bad flag before generating anything
    return RayClusterSpec(
        name=common.check_gcp_name("--name", args.name),
        project=args.project,
        zone=args.zone,
        slice=tpu_slice,
        spot=args.spot,
        images=common.images_from_arguments(args),
        head_machine_type=args.head_machine_type,
        actor_machine_type=args.actor_machine_type,
        actors_per_node=args.actors_per_node,
        min_actor_nodes=args.min_actor_nodes,
        max_actor_nodes=max_actor_nodes,
        staging_dir=args.staging_dir or os.path.join("/tmp", "coala-launch", args.name),
        job=job,
    )


def build_plan(argv: list[str]) -> tuple[Plan, bool]:
    """Parses a command line; returns its plan and whether it is a dry run.

    Raises:
      ValueError: a flag value out of range (the message names the flag).
    """
    args, extra = _parser().parse_known_args(argv)
    tpu_slice = parse_accelerator_type(args.accelerator_type, args.runtime_version)
    needs_job = args.command in ("up", "run")
    job = common.job_from_arguments(args, extra, tpu_slice, bucket_required=needs_job)
    spec = spec_from_arguments(args, tpu_slice, job)
    run_name = common.run_name_from_arguments(args)
    if args.command == "config":
        plan = plan_config(spec)
    elif args.command == "up":
        plan = plan_up(spec)
    elif args.command == "run":
        plan = plan_run(spec)
    else:
        plan = plan_down(spec, run_name)
    return plan, args.dry_run


def main(argv: list[str] | None = None) -> int:
    """`python -m launch.ray_cluster`: prints (`--dry_run`) or runs a plan; returns the status."""
    return command_line_main("python -m launch.ray_cluster", build_plan, argv)


if __name__ == "__main__":
    sys.exit(main())
