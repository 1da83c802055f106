"""Hudi's table services (compaction, clustering, cleaning) as write options.

The stream's writer runs them inline: after its commit, a micro-batch compacts a merge-on-read
table every ``hudi.compaction_delta_commits``, clusters small files every
``hudi.clustering_commits`` and cleans old file versions, all from the pipeline's
``maintenance`` section. The table keeps one writer, so no lock provider is needed (see
``etl.formats.hudi.maintenance`` for why that is the choice on Hudi 1.0.2).
"""

from __future__ import annotations

from etl.config import CompactSettings, ExpireSettings, HudiOptions, MaintenanceSettings

# Hudi's clustering rewrites files below this share of the target size (as Iceberg's and
# Delta's bin-pack do)
MIN_FILE_SHARE = 0.75
# Hudi archives the timeline down to this many instants at least; it must exceed the commits
# the cleaner retains
_MIN_ARCHIVED = 20


def clustering_options(settings: CompactSettings) -> dict[str, str]:
    """The clustering plan: target size, what counts as small, sort order."""
    target = settings.target_file_size_mb * 1024 * 1024
    options = {
        "hoodie.clustering.plan.strategy.target.file.max.bytes": str(target),
        "hoodie.clustering.plan.strategy.small.file.limit": str(int(target * MIN_FILE_SHARE)),
    }
    if settings.sort_by:
        options["hoodie.clustering.plan.strategy.sort.columns"] = ",".join(settings.sort_by)
        options["hoodie.layout.optimize.strategy"] = "z-order" if settings.zorder else "linear"
    return options


def cleaner_options(settings: ExpireSettings) -> dict[str, str]:
    """The cleaner keeps the file versions of the last ``retain_last`` commits."""
    keep = max(_MIN_ARCHIVED, settings.retain_last + 1)
    return {
        "hoodie.cleaner.policy": "KEEP_LATEST_COMMITS",
        "hoodie.cleaner.commits.retained": str(settings.retain_last),
        "hoodie.keep.min.commits": str(keep),
        "hoodie.keep.max.commits": str(keep + 10),
    }


def inline_service_options(
    maintenance: MaintenanceSettings, options: HudiOptions
) -> dict[str, str]:
    """The write options that make each commit run the table services the settings ask for."""
    result = {"hoodie.clean.automatic": str(maintenance.expire.enabled).lower()}
    if maintenance.expire.enabled:
        result |= cleaner_options(maintenance.expire)
    if maintenance.compact.enabled:
        result |= {
            "hoodie.clustering.inline": "true",
            "hoodie.clustering.inline.max.commits": str(options.clustering_commits),
            **clustering_options(maintenance.compact),
        }
    return result
