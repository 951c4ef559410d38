"""The releases sensor: a manifest saved under <home>/releases/<workflow>/<version>.yaml adds
the release's partition and requests its manifest record and eval run."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.evals.assets import release_eval_job
from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS, releases_partitions
from relops_pipeline.defs.resources import RelopsHomeResource


def scan_manifests(root) -> dict[str, str]:
    """{path: sha256 of the file} for every manifest file under the releases folder."""
    if not root.is_dir():
        return {}
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*/*.yaml"))}


@with_beta_parameters(
    dg.sensor,
    job=release_eval_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def releases_sensor(context: dg.SensorEvaluationContext, home: RelopsHomeResource):
    """Register new release manifests: add the release partition and run its eval."""
    from relops_pipeline.lib.evals.manifests import ManifestError, load_manifest

    root = home.home.root / "releases"
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = scan_manifests(root)
    changed = [p for p, h in current.items() if seen.get(p) != h]
    if not changed:
        return dg.SkipReason(f"no new manifests in {root}")
    known = set(context.instance.get_dynamic_partitions(RELEASES_PARTITIONS))
    new_keys, requests = [], []
    for path in changed:
        try:
            manifest = load_manifest(Path(path))
        except (ManifestError, ValueError) as exc:
            context.log.error(f"invalid manifest {path}: {exc}")
            continue
        key = manifest.release_key
        if key in known:
            if seen.get(path) is not None:
                context.log.error(f"{path} changed after release {key} was registered: manifests are immutable; "
                                  "save the change as a new version")
            continue
        new_keys.append(key)
        requests.append(dg.RunRequest(run_key=f"release-{key}-{current[path][:12]}", partition_key=key,
                                      tags={"relops/trigger": "releases_sensor"}))
    seen.update(current)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[releases_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(seen),
    )
