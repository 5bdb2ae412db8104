"""Cloud TPU launcher: a TPU slice for the learner, CPU VMs for actors, one Ray cluster, one run.

    python -m launch.tpu COMMAND --name=NAME --project=PROJECT --zone=ZONE [flags]
                                 [--config.FIELD=VALUE ...]

Every command accepts `--dry_run`: it prints the whole plan (the generated files and every gcloud,
docker and ray command) and runs nothing.

  images      build the learner (TPU) and actor (CPU) images from this checkout and push them.
  up          add the deployment's firewall rules (only its own VMs reach its VMs' ports, SSH aside);
              create the TPU slice, or reuse it (a preempted one is recreated); start the Ray head
              in the learner image on TPU worker 0 and Ray workers on the other TPU hosts; create
              the CPU actor VMs (a managed instance group sized by --num_actors / --actors_per_node)
              that join the cluster with JAX_PLATFORMS=cpu; submit `coala train --launch=ray` with
              the workdir gs://BUCKET/RUN_NAME. Run `up` again after a preemption: everything comes
              back and the run resumes from its newest checkpoint.
  run         (re)submit the training job on the running cluster; it resumes from the workdir.
  add_actors  resize the actor group for --num_actors and resubmit the job with that many actors.
  status      the slice's state, the actor VMs, `ray status` and the job's status.
  logs        follow the driver's log.
  down        stop the job (the learner checkpoints on SIGTERM), delete the actor VMs, the TPU
              slice and the firewall rules. The bucket and its checkpoints are kept.

Which process may open libtpu and who joins `jax.distributed` is set out in `launch/common.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys

from launch import common
from launch.plan import GeneratedFile, Plan, Step, command_line_main
from launch.topology import TpuSlice, parse_accelerator_type

COMMANDS = ("images", "up", "run", "add_actors", "status", "logs", "down")

TPU_HOST_SCRIPT = "coala-tpu-host-ray.sh"
ACTOR_STARTUP_SCRIPT = "coala-actor-startup.sh"
SUBMIT_SCRIPT = "coala-submit-training.sh"

# Polling bounds: a queued resource may wait hours for capacity (give up after 2 h); all TPU hosts
# join the Ray head within 10 minutes or something is wrong.
_TPU_POLL_SECONDS, _TPU_POLLS = 30, 240
_RAY_POLL_SECONDS, _RAY_POLLS = 10, 60

# Shared memory of the containers for Ray's object store (Docker's default of 64 MB makes Ray fall
# back to disk). TPU VMs have hundreds of GB; the default actor machine type has 32 GB.
_TPU_SHM_SIZE, _ACTOR_SHM_SIZE = "32g", "8g"


@dataclasses.dataclass(frozen=True)
class TpuDeployment:
    """Everything a plan needs to know about one deployment.

    Attributes:
      name: names the TPU slice (queued resource and TPU VM) and prefixes the actor group.
      project: GCP project.
      zone: zone of the TPU slice and of the actor VMs.
      slice: the TPU slice's shape.
      provisioning: `queued` (a queued resource, waits for capacity) or `direct` (tpu-vm create).
      spot: Spot capacity for the TPU slice and the actor VMs.
      network: VPC network of every VM. `up` adds two firewall rules to it for this deployment's network tag:
        its VMs reach each other on every port, and nothing else reaches them on any port but SSH (22, which
        gcloud needs and the network's own rules govern).
      images: learner and actor image references.
      actor_machine_type: machine type of the CPU actor VMs.
      actors_per_node: actors (Ray actor slots) per CPU VM.
      num_actor_nodes: CPU VMs in the actor group.
      staging_dir: local directory for the generated files.
      job: the training job (None for plans that need none).
    """

    name: str
    project: str
    zone: str
    slice: TpuSlice
    provisioning: str
    spot: bool
    network: str
    images: common.Images
    actor_machine_type: str
    actors_per_node: int
    num_actor_nodes: int
    staging_dir: str
    job: common.TrainingJob | None

    @property
    def actor_group(self) -> str:
        """Name of the managed instance group of actor VMs (and of its instance template)."""
        return f"{self.name}-actors"

    @property
    def network_tag(self) -> str:
        """Network tag of every VM of the deployment (TPU hosts, actor VMs): the firewall rules name it."""
        return f"{self.name}-vms"

    @property
    def firewall_rules(self) -> tuple[str, str]:
        """Names of the deployment's firewall rules: (allow among its VMs, deny everyone else)."""
        return f"{self.name}-allow-own-vms", f"{self.name}-deny-others"

    @property
    def where(self) -> str:
        """`--zone=... --project=...` for gcloud."""
        return f"--zone={self.zone} --project={self.project}"

    def tpu_ssh(self, workers: str, command: str) -> str:
        """gcloud ssh into TPU hosts; `command` is double-quoted, so `$HEAD_IP` expands here."""
        return (
            f"gcloud compute tpus tpu-vm ssh {self.name} --worker={workers} {self.where} "
            f'--command="{command}"'
        )

    def tpu_scp(self, file_name: str, workers: str) -> str:
        """gcloud scp of a generated file to the home directory of TPU hosts."""
        return (
            f'gcloud compute tpus tpu-vm scp "$STAGING_DIR/{file_name}" {self.name}:{file_name} '
            f"--worker={workers} {self.where}"
        )

    def summary(self) -> tuple[str, ...]:
        """Comment lines at the top of every plan: what gets deployed where."""
        slice_ = self.slice
        if slice_.is_multi_host:
            group = (
                f"one jax.distributed group of {slice_.num_hosts} processes, coordinator TPU "
                f"worker 0 port {common.JAX_COORDINATOR_PORT}"
            )
        else:
            group = "single host: no jax.distributed group"
        workers_word = "TPU workers" if slice_.is_multi_host else "TPU worker"
        lines = [
            f"TPU slice {self.name}: {slice_.describe()}",
            f"learner hosts: {slice_.num_hosts} ({workers_word} {_workers(slice_.worker_ids)}); "
            + group,
            f"Ray head: TPU worker 0 (dashboard port {common.RAY_DASHBOARD_PORT}); the driver runs "
            "there with JAX_PLATFORMS=cpu",
            f"actor nodes: {self.num_actor_nodes} x {self.actor_machine_type} "
            f"({self.actors_per_node} actor slots each), JAX_PLATFORMS=cpu",
        ]
        if self.job is not None:
            job = self.job
            lines.append(f"actors: {job.num_actors}, mode {job.mode}, config {job.config}")
            lines.append(f"workdir: {job.workdir} (checkpoints; `up` or `run` with it resumes)")
        lines.append(f"learner image: {self.images.learner}")
        lines.append(f"actor image: {self.images.actor}")
        return tuple(lines)


def _workers(worker_ids: tuple[int, ...]) -> str:
    """gcloud's `--worker` list: `0` or `1,2,3`."""
    return ",".join(str(worker) for worker in worker_ids)


# ----- generated files -----


def tpu_host_script(deployment: TpuDeployment) -> GeneratedFile:
    """The script each TPU host runs to start its Ray node (the head on worker 0)."""
    slice_ = deployment.slice
    coordinator = "${HEAD_IP}" if slice_.is_multi_host else None
    image = shlex.quote(deployment.images.learner)
    resources = common.ray_resources_flag(common.learner_host_resources())
    docker_run = " \\\n  ".join(
        [
            f"sudo docker run --detach --name={common.CONTAINER_NAME} --privileged --net=host "
            f"--shm-size={_TPU_SHM_SIZE} --ulimit=nofile=65536:65536",
            *common.env_flags(common.learner_host_environment(coordinator)),
            image,
            f'"${{ray_start[@]}}" --block {resources}',
        ]
    )
    if slice_.is_multi_host:
        group_note = (
            f"# The {slice_.num_hosts} learner processes of this multi-host slice form one\n"
            "# jax.distributed group: JAX_COORDINATOR_ADDRESS names TPU worker 0, and\n"
            "# jax.distributed.initialize() reads the process id and count from the TPU metadata.\n"
            "# Actor VMs never get a coordinator address."
        )
    else:
        group_note = "# Single-host slice: one learner process, no jax.distributed group."
    content = f"""#!/usr/bin/env bash
# Starts this TPU host's Ray node in the learner image ({slice_.accelerator_type}).
# Usage: {TPU_HOST_SCRIPT} head|worker HEAD_IP   (HEAD_IP: internal IP of TPU worker 0)
set -euo pipefail
role="$1"
HEAD_IP="$2"
sudo gcloud auth configure-docker {deployment.images.registry_host} --quiet
sudo docker pull {image}
# A restarted node joins a fresh cluster; the run resumes from the checkpoints in its workdir.
sudo docker rm --force {common.CONTAINER_NAME} >/dev/null 2>&1 || true
case "$role" in
  head) ray_start=(ray start --head --port={common.RAY_PORT} --dashboard-host=0.0.0.0) ;;
  worker) ray_start=(ray start --address="${{HEAD_IP}}:{common.RAY_PORT}") ;;
  *) echo "usage: $0 head|worker HEAD_IP" >&2; exit 2 ;;
esac
# --privileged hands the TPU devices to the container. The host's learner process is the only one
# that opens libtpu; whatever else Ray runs here uses JAX_PLATFORMS=cpu.
{group_note}
{docker_run}
"""
    return GeneratedFile(
        TPU_HOST_SCRIPT, content, "starts the Ray node of one TPU (learner) host", executable=True
    )


def actor_startup_script(deployment: TpuDeployment) -> GeneratedFile:
    """The startup script of each CPU actor VM (Container-Optimized OS): joins as an actor node."""
    image = shlex.quote(deployment.images.actor)
    resources = common.ray_resources_flag(common.actor_node_resources(deployment.actors_per_node))
    docker_run = " \\\n  ".join(
        [
            f"docker run --detach --name={common.CONTAINER_NAME} --restart=on-failure --net=host "
            f"--shm-size={_ACTOR_SHM_SIZE} --ulimit=nofile=65536:65536",
            *common.env_flags(common.actor_node_environment()),
            image,
            f'ray start --address="${{HEAD_IP}}:{common.RAY_PORT}" --block {resources}',
        ]
    )
    content = f"""#!/bin/bash
# Startup script of a CPU actor VM: a Ray worker node in the actor image, joined to the head on TPU
# worker 0, whose address the launcher put in the instance metadata (coala-ray-head).
set -euo pipefail
metadata() {{
  curl --fail --silent --show-error --header 'Metadata-Flavor: Google' \\
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"
}}
HEAD_IP="$(metadata coala-ray-head)"
# Container-Optimized OS keeps / read-only: docker's credentials go to a writable HOME.
export HOME=/var/lib/coala
mkdir -p "$HOME"
docker-credential-gcr configure-docker --registries={deployment.images.registry_host}
docker rm --force {common.CONTAINER_NAME} >/dev/null 2>&1 || true
# Actors run JAX on the CPU (JAX_PLATFORMS=cpu, also baked into the actor image) and never join the
# learners' jax.distributed group. --restart=on-failure retries until the head accepts the node.
{docker_run}
"""
    return GeneratedFile(
        ACTOR_STARTUP_SCRIPT, content, "startup script of each CPU actor VM", executable=True
    )


def submit_script(deployment: TpuDeployment, job: common.TrainingJob) -> GeneratedFile:
    """The script TPU worker 0 runs: waits for every learner host, submits the driver job."""
    in_container = f"sudo docker exec {common.CONTAINER_NAME}"
    num_hosts = deployment.slice.num_hosts
    wait = common.wait_for_learner_hosts_script(
        f"{in_container} python", num_hosts, polls=_RAY_POLLS, poll_seconds=_RAY_POLL_SECONDS
    )
    content = f"""#!/usr/bin/env bash
# Runs on TPU worker 0 (the Ray head): waits until the slice's {num_hosts} learner host(s)
# joined Ray (each carries {common.LEARNER_HOST_RESOURCE}), then submits the driver.
set -euo pipefail
{wait}
{job.submit_script(f"{in_container} ray")}
"""
    return GeneratedFile(SUBMIT_SCRIPT, content, "waits for the learner hosts, submits the job")


# ----- steps -----


def _create_tpu_command(deployment: TpuDeployment) -> str:
    slice_, name = deployment.slice, deployment.name
    if deployment.provisioning == "queued":
        words = [
            f"gcloud compute tpus queued-resources create {name} --node-id={name}",
            deployment.where,
            f"--accelerator-type={slice_.accelerator_type}",
            f"--runtime-version={slice_.runtime_version}",
        ]
    else:
        words = [
            f"gcloud compute tpus tpu-vm create {name} {deployment.where}",
            f"--accelerator-type={slice_.accelerator_type}",
            f"--version={slice_.runtime_version}",
        ]
    words.append(f"--network={deployment.network} --tags={deployment.network_tag}")
    if deployment.spot:
        words.append("--spot")
    return " ".join(words)


# Priorities of the deployment's firewall rules: the lower number wins, and GCP's default network rules (e.g.
# default-allow-internal, which lets every VM of the network reach every port) have 65534; custom ones often 1000.
_ALLOW_OWN_VMS_PRIORITY, _DENY_OTHERS_PRIORITY = 900, 910
# Everything but SSH: Ray's GCS, raylets, object managers, workers and dashboard, Reverb, jax.distributed's coordinator.
_DENIED_TO_OTHERS = "tcp:1-21,tcp:23-65535,udp:1-65535"


def _firewall_step(deployment: TpuDeployment) -> Step:
    """The deployment's firewall rules (created once, kept across `up`s): Ray, Reverb and jax.distributed accept
    connections from the deployment's own VMs only."""
    allow, deny = deployment.firewall_rules
    tag, project, network = deployment.network_tag, deployment.project, deployment.network
    exists = f"gcloud compute firewall-rules describe {{}} --project={project} >/dev/null 2>&1"
    create = (
        f"gcloud compute firewall-rules create {{}} --project={project} --network={network} --direction=INGRESS"
    )
    command = (
        f"{exists.format(allow)} || {create.format(allow)} --priority={_ALLOW_OWN_VMS_PRIORITY} --action=ALLOW "
        f"--rules=all --source-tags={tag} --target-tags={tag}\n"
        f"{exists.format(deny)} || {create.format(deny)} --priority={_DENY_OTHERS_PRIORITY} --action=DENY "
        f"--rules={_DENIED_TO_OTHERS} --source-ranges=0.0.0.0/0 --target-tags={tag}"
    )
    return Step(f"firewall: only VMs tagged {tag} reach its VMs' ports (SSH aside)", command)


def _ensure_tpu_step(deployment: TpuDeployment) -> Step:
    """Create or reuse the slice; recreate it if it was preempted; wait until it is usable."""
    name, where = deployment.name, deployment.where
    create = _create_tpu_command(deployment)
    if deployment.provisioning == "queued":
        noun, state_field = "queued-resources", "state.state"
        delete = f"gcloud compute tpus queued-resources delete {name} {where} --force --quiet"
        ready, broken = "ACTIVE", "FAILED|SUSPENDED"
    else:
        noun, state_field = "tpu-vm", "state"
        delete = f"gcloud compute tpus tpu-vm delete {name} {where} --quiet"
        ready, broken = "READY", "PREEMPTED|TERMINATED|STOPPED"
    describe = f"gcloud compute tpus {noun} describe {name} {where} --format='value({state_field})'"
    command = f"""state="$({describe} 2>/dev/null || true)"
case "$state" in
  {ready}) echo "reusing TPU slice {name} ($state)" ;;
  "") {create} ;;
  {broken})
    echo "TPU slice {name} is $state (preempted or failed): deleting and recreating it"
    {delete}
    {create} ;;
  *) echo "TPU slice {name} is $state: waiting for it" ;;
esac
for attempt in $(seq 1 {_TPU_POLLS}); do
  state="$({describe})"
  if [ "$state" = {ready} ]; then break; fi
  case "$state" in {broken}) echo "TPU slice {name} is $state" >&2; exit 1 ;; esac
  echo "waiting for TPU slice {name}: $state (poll $attempt)"
  sleep {_TPU_POLL_SECONDS}
done
if [ "$state" != {ready} ]; then
  echo "TPU slice {name} is still $state after waiting" >&2
  exit 1
fi"""
    description = (
        f"create or reuse the {deployment.slice.accelerator_type} slice {name}, wait until it is up"
    )
    return Step(description, command)


def _head_ip_step(deployment: TpuDeployment) -> Step:
    return Step(
        "look up the internal IP of TPU worker 0 (Ray head, jax.distributed coordinator)",
        f'HEAD_IP="$(gcloud compute tpus tpu-vm describe {deployment.name} {deployment.where} '
        "--format='value(networkEndpoints[0].ipAddress)')\"\n"
        'echo "Ray head: $HEAD_IP"',
    )


def _start_ray_on_tpu_steps(deployment: TpuDeployment) -> list[Step]:
    num_hosts = deployment.slice.num_hosts
    steps = [
        Step(
            f"copy the Ray node script to all {num_hosts} TPU host(s)",
            deployment.tpu_scp(TPU_HOST_SCRIPT, "all"),
        ),
        Step(
            "start the Ray head on TPU worker 0 (learner image)",
            deployment.tpu_ssh("0", f"bash {TPU_HOST_SCRIPT} head $HEAD_IP"),
        ),
    ]
    other_workers = _workers(deployment.slice.worker_ids[1:])
    if other_workers:
        steps.append(
            Step(
                f"start Ray workers on TPU workers {other_workers} (learner image)",
                deployment.tpu_ssh(other_workers, f"bash {TPU_HOST_SCRIPT} worker $HEAD_IP"),
            )
        )
    return steps


def _actor_group_steps(deployment: TpuDeployment) -> list[Step]:
    group, where = deployment.actor_group, deployment.where
    project_flag = f"--project={deployment.project}"
    template_lines = [
        f"gcloud compute instance-templates create {group} {project_flag}",
        f"--machine-type={deployment.actor_machine_type}",
        "--image-family=cos-stable --image-project=cos-cloud",
        f"--network={deployment.network} --tags={deployment.network_tag} --scopes=cloud-platform",
        '--metadata=coala-ray-head="$HEAD_IP"',
        f'--metadata-from-file=startup-script="$STAGING_DIR/{ACTOR_STARTUP_SCRIPT}"',
    ]
    if deployment.spot:
        template_lines.append("--provisioning-model=SPOT --instance-termination-action=DELETE")
    quiet = "--quiet >/dev/null 2>&1 || true"
    return [
        Step(
            "remove an earlier actor group (its VMs point at an old head address)",
            f"gcloud compute instance-groups managed delete {group} {where} {quiet}\n"
            f"gcloud compute instance-templates delete {group} {project_flag} {quiet}",
        ),
        Step(
            f"create {deployment.num_actor_nodes} CPU actor VM(s): Ray nodes, JAX_PLATFORMS=cpu",
            " \\\n  ".join(template_lines) + "\n"
            f"gcloud compute instance-groups managed create {group} {where} --template={group} "
            f"--size={deployment.num_actor_nodes}",
        ),
    ]


def _submit_steps(deployment: TpuDeployment) -> list[Step]:
    job = deployment.job
    if job is None:
        raise ValueError("--bucket is required to submit the training job")
    logs = (
        f"python -m launch.tpu logs --name={deployment.name} --project={deployment.project} "
        f"--zone={deployment.zone} --run_name={job.run_name}"
    )
    return [
        Step("copy the submit script to TPU worker 0", deployment.tpu_scp(SUBMIT_SCRIPT, "0")),
        Step(
            f"submit coala train --launch=ray as Ray job {job.job_id} (workdir {job.workdir})",
            deployment.tpu_ssh("0", f"bash {SUBMIT_SCRIPT}"),
        ),
        common.watch_step(job, logs),
    ]


# ----- plans -----


def _plan(deployment: TpuDeployment, command: str, files, steps, tools) -> Plan:
    return common.make_plan("Cloud TPU", deployment, command, files, steps, tools)


def plan_images(deployment: TpuDeployment) -> Plan:
    """Build and push both images (needs docker and gcloud here)."""
    steps = common.image_build_steps(deployment.images, deployment.project)
    return _plan(deployment, "images", (), steps, ("gcloud", "docker"))


def plan_up(deployment: TpuDeployment) -> Plan:
    """Bring up (or back) the whole deployment and submit the run; idempotent, resumes."""
    job = deployment.job
    if job is None:
        raise ValueError("--bucket is required for up")
    location = common.region_of_zone(deployment.zone)
    steps = [
        common.ensure_bucket_step(job, deployment.project, location),
        _firewall_step(deployment),
        _ensure_tpu_step(deployment),
        _head_ip_step(deployment),
        *_start_ray_on_tpu_steps(deployment),
        *_actor_group_steps(deployment),
        *_submit_steps(deployment),
    ]
    files = (
        tpu_host_script(deployment),
        actor_startup_script(deployment),
        submit_script(deployment, job),
    )
    return _plan(deployment, "up", files, steps, ("gcloud",))


def plan_run(deployment: TpuDeployment) -> Plan:
    """(Re)submit the job on the running cluster; it resumes from the workdir."""
    if deployment.job is None:
        raise ValueError("--bucket is required for run")
    files = (submit_script(deployment, deployment.job),)
    title = "run (resumes from the newest checkpoint in the workdir)"
    return _plan(deployment, title, files, _submit_steps(deployment), ("gcloud",))


def plan_add_actors(deployment: TpuDeployment) -> Plan:
    """Resize the actor group and resubmit the job with the new actor count (it resumes)."""
    job = deployment.job
    if job is None:
        raise ValueError("--bucket is required for add_actors")
    resize = Step(
        f"resize the actor group to {deployment.num_actor_nodes} VM(s) for {job.num_actors} actors",
        f"gcloud compute instance-groups managed resize {deployment.actor_group} "
        f"{deployment.where} --size={deployment.num_actor_nodes}",
    )
    files = (submit_script(deployment, job),)
    title = "add_actors (resubmits the job; it resumes from the workdir)"
    return _plan(deployment, title, files, [resize, *_submit_steps(deployment)], ("gcloud",))


def plan_status(deployment: TpuDeployment, run_name: str) -> Plan:
    """Show the slice, the actor VMs, the Ray nodes and the job."""
    noun = "queued-resources" if deployment.provisioning == "queued" else "tpu-vm"
    in_container = f"sudo docker exec {common.CONTAINER_NAME}"
    job = common.job_id(run_name)
    steps = [
        Step(
            "the TPU slice",
            f"gcloud compute tpus {noun} describe {deployment.name} {deployment.where}",
        ),
        Step(
            "the actor VMs",
            f"gcloud compute instance-groups managed list-instances {deployment.actor_group} "
            f"{deployment.where} || true",
        ),
        Step(
            "Ray nodes and the training job",
            deployment.tpu_ssh(
                "0", f"{in_container} ray status; {in_container} ray job status {job}"
            ),
        ),
    ]
    return _plan(deployment, "status", (), steps, ("gcloud",))


def plan_logs(deployment: TpuDeployment, run_name: str) -> Plan:
    """Follow the driver's log."""
    follow = (
        f"sudo docker exec {common.CONTAINER_NAME} ray job logs {common.job_id(run_name)} --follow"
    )
    step = Step(
        "follow the driver's log (Ctrl-C stops following, not the run)",
        deployment.tpu_ssh("0", follow),
    )
    return _plan(deployment, "logs", (), [step], ("gcloud",))


def plan_down(deployment: TpuDeployment, run_name: str, bucket: str | None) -> Plan:
    """Stop the job and delete every VM; keep the bucket (the checkpoints)."""
    name, where = deployment.name, deployment.where
    if deployment.provisioning == "queued":
        delete_tpu = f"gcloud compute tpus queued-resources delete {name} {where} --force --quiet"
    else:
        delete_tpu = f"gcloud compute tpus tpu-vm delete {name} {where} --quiet"
    kept = f"gs://{bucket or 'BUCKET'}/{run_name}"
    stop = f"sudo docker exec {common.CONTAINER_NAME} ray job stop {common.job_id(run_name)}"
    steps = [
        Step(
            "stop the training job (SIGTERM: the learner writes a last checkpoint)",
            deployment.tpu_ssh("0", stop) + " || true",
        ),
        Step(
            "delete the actor VMs and their template",
            f"gcloud compute instance-groups managed delete {deployment.actor_group} {where} "
            "--quiet || true\n"
            f"gcloud compute instance-templates delete {deployment.actor_group} "
            f"--project={deployment.project} --quiet || true",
        ),
        Step(f"delete the TPU slice {name}", delete_tpu),
        Step(
            "delete the deployment's firewall rules",
            f"gcloud compute firewall-rules delete {' '.join(deployment.firewall_rules)} "
            f"--project={deployment.project} --quiet || true",
        ),
        Step(
            "the workdir is kept",
            f"echo {shlex.quote(f'kept {kept}: up with the same --bucket, --run_name resumes')}\n"
            f"echo {shlex.quote(f'to delete it: gcloud storage rm --recursive {kept}')}",
        ),
    ]
    return _plan(deployment, "down", (), steps, ("gcloud",))


# ----- command line -----


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launch.tpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Unrecognised --config.FIELD=VALUE flags are passed on to `coala train`.",
    )
    add = parser.add_argument
    add("command", choices=COMMANDS)
    add("--name", required=True, help="TPU slice name; prefixes the actor group")
    add("--project", required=True, help="GCP project")
    add("--zone", required=True, help="zone with TPU capacity for --accelerator_type")
    add("--accelerator_type", default="v4-8", help="v4-8 (1 host), v5litepod-16 (4 hosts), ...")
    add("--runtime_version", help="TPU VM software version (default: the generation's base)")
    add("--provisioning", choices=("queued", "direct"), default="queued", help="queued resource")
    add("--network", default="default", help="VPC network (`up` adds firewall rules for the deployment's VMs)")
    common.add_job_arguments(parser)
    return parser


def deployment_from_arguments(
    args: argparse.Namespace, tpu_slice: TpuSlice, job: common.TrainingJob | None
) -> TpuDeployment:
    """The deployment the parsed flags describe (ValueError names a bad flag)."""
    return TpuDeployment(
        name=common.check_gcp_name("--name", args.name),
        project=args.project,
        zone=args.zone,
        slice=tpu_slice,
        provisioning=args.provisioning,
        spot=args.spot,
        network=args.network,
        images=common.images_from_arguments(args),
        actor_machine_type=args.actor_machine_type,
        actors_per_node=args.actors_per_node,
        num_actor_nodes=common.actor_nodes_for(args.num_actors, args.actors_per_node),
        staging_dir=args.staging_dir or os.path.join("/tmp", "coala-launch", args.name),
        job=job,
    )


def build_plan(argv: list[str]) -> tuple[Plan, bool]:
    """Parses a command line; returns its plan and whether it is a dry run.

    Raises:
      ValueError: a flag value out of range (the message names the flag).
    """
    args, extra = _parser().parse_known_args(argv)
    needs_job = args.command in ("up", "run", "add_actors")
    tpu_slice = parse_accelerator_type(args.accelerator_type, args.runtime_version)
    job = common.job_from_arguments(args, extra, tpu_slice, bucket_required=needs_job)
    deployment = deployment_from_arguments(args, tpu_slice, job)
    run_name = common.run_name_from_arguments(args)
    if args.command == "images":
        plan = plan_images(deployment)
    elif args.command == "up":
        plan = plan_up(deployment)
    elif args.command == "run":
        plan = plan_run(deployment)
    elif args.command == "add_actors":
        plan = plan_add_actors(deployment)
    elif args.command == "status":
        plan = plan_status(deployment, run_name)
    elif args.command == "logs":
        plan = plan_logs(deployment, run_name)
    else:
        plan = plan_down(deployment, run_name, job.bucket if job else None)
    return plan, args.dry_run


def main(argv: list[str] | None = None) -> int:
    """`python -m launch.tpu`: prints (`--dry_run`) or runs a plan; returns the exit status."""
    return command_line_main("python -m launch.tpu", build_plan, argv)


if __name__ == "__main__":
    sys.exit(main())
