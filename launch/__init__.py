"""Cloud launchers of coala-dist: Cloud TPU (`python -m launch.tpu`) and the Ray cluster launcher
on GCP (`python -m launch.ray_cluster`).

Standard library only (plus PyYAML for the cluster config), so they run on a laptop that has
gcloud; every command takes `--dry_run`, which prints the generated files and every command. See
docs/cloud_tpu.md.
"""
